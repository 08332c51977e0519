package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

func demoConfig(t *testing.T, dir string, stations int) Config {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = dir
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.Demo.Enabled = true
	cfg.Demo.Stations = stations
	return cfg
}

func startDemo(t *testing.T, cfg Config) (*Demo, string) {
	t.Helper()
	var out bytes.Buffer
	d, err := StartDemo(context.Background(), cfg, nil, &out)
	if err != nil {
		t.Fatalf("StartDemo: %v", err)
	}
	t.Cleanup(func() { d.Shutdown(context.Background()) })
	return d, out.String()
}

// dialWS opens a WebSocket on the demo's HTTP address.
func dialWS(t *testing.T, d *Demo, path string) *websocket.Conn {
	t.Helper()
	u := "ws://" + d.HTTPAddr() + path
	c, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (HTTP %d)", path, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readUntil reads frames until done returns true for one of them or the
// deadline passes.
func readUntil(t *testing.T, c *websocket.Conn, within time.Duration, what string, done func(msg map[string]any) bool) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		var msg map[string]any
		if err := json.Unmarshal(b, &msg); err != nil {
			t.Fatalf("frame is not JSON: %s", b)
		}
		if done(msg) {
			return
		}
	}
}

func TestDemoEndToEnd(t *testing.T) {
	d, banner := startDemo(t, demoConfig(t, t.TempDir(), 3))
	base := "http://" + d.HTTPAddr()
	token := d.UserToken()
	if token == "" || d.UserID() != DemoUserID {
		t.Fatalf("demo user %q token %q", d.UserID(), token)
	}
	_, adminPath := d.Server().AdminToken()
	for _, want := range []string{
		base + "/",
		base + "/#token=" + token,
		"ws://" + d.HTTPAddr() + "/ws/stations/",
		"ws://" + d.HTTPAddr() + "/ws/stations/ber-alexanderplatz/",
		"ws://" + d.HTTPAddr() + "/ws/notifications/?token=" + token,
		"tcp://" + d.MQTTAddr(),
		adminPath,
		DemoUserID + ", token " + token,
	} {
		if want == "" || !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}

	// The provisioned stations are listed, with the demo's names.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	anon := client.New(base, "")
	views, err := anon.Stations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]DemoStation{}
	for _, s := range d.Stations() {
		want[s.ID] = s
	}
	if len(views) != 3 {
		t.Fatalf("%d stations listed, want 3", len(views))
	}
	for _, v := range views {
		s, ok := want[v.ID]
		if !ok || v.Name != s.Name || v.TotalSlots != s.Slots {
			t.Errorf("station %+v does not match the demo's %+v", v, s)
		}
	}

	// Every agent connects over MQTT with its provisioned secret and
	// reports its slots: each station comes online.
	ws := dialWS(t, d, "/ws/stations/?since=0")
	online := map[string]bool{}
	readUntil(t, ws, 20*time.Second, "every station online", func(m map[string]any) bool {
		if m["type"] == wire.TypeStationStatus && m["status"] == wire.StationOnline {
			online[m["station_id"].(string)] = true
		}
		return len(online) == len(want)
	})

	// The demo user books; its notification channel confirms.
	notes := dialWS(t, d, "/ws/notifications/?token="+url.QueryEscape(token))
	readUntil(t, notes, 5*time.Second, "hello", func(m map[string]any) bool {
		return m["type"] == wire.TypeHello && m["channel"] == "user:"+DemoUserID
	})
	user := client.New(base, token)
	var bk wire.Booking
	deadline := time.Now().Add(20 * time.Second)
	for {
		bk, err = user.Book(ctx, d.Stations()[0].ID)
		if err == nil {
			break
		}
		// Right after connecting, a station may not have reported its
		// batteries yet; its next telemetry is a second away.
		if !client.IsCode(err, "no_battery_available") || time.Now().After(deadline) {
			t.Fatalf("book: %v", err)
		}
		readUntil(t, ws, 5*time.Second, "the next station event", func(map[string]any) bool { return true })
	}
	readUntil(t, notes, 20*time.Second, "booking_confirmed", func(m map[string]any) bool {
		return m["type"] == wire.TypeBookingConfirmed && m["booking_id"] == bk.ID
	})

	// The dashboard is served, with the demo user's one-click sign-in.
	for path, wantBody := range map[string]string{
		"/":               `src="/ui/app.js"`,
		"/ui/config.json": `"demo_token":"` + token + `"`,
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), wantBody) {
			t.Errorf("GET %s: %d %s; want %s", path, resp.StatusCode, b, wantBody)
		}
	}

	// Shutdown stops everything and is idempotent.
	sctx, scancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer scancel()
	if err := d.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := d.Shutdown(sctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("HTTP still answers after Shutdown")
	}
}

func TestDemoDataDirFreshOrKept(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first, _ := startDemo(t, demoConfig(t, dir, 2))
	token := first.UserToken()
	if err := first.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// Kept: the same stations reconnect and the same token still works.
	cfg := demoConfig(t, dir, 2)
	cfg.Demo.Keep = true
	kept, _ := startDemo(t, cfg)
	if kept.UserToken() != token {
		t.Errorf("kept demo has a new user token")
	}
	if err := client.New("http://"+kept.HTTPAddr(), token).Do(ctx, http.MethodGet, "/api/bookings", nil, nil); err != nil {
		t.Errorf("the kept token is refused: %v", err)
	}
	if err := kept.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	// Fresh: the old token is gone with the old data.
	fresh, _ := startDemo(t, demoConfig(t, dir, 2))
	err := client.New("http://"+fresh.HTTPAddr(), token).Do(ctx, http.MethodGet, "/api/bookings", nil, nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
		t.Errorf("the old token after a fresh start: %v, want 401", err)
	}
	if fresh.UserToken() == token {
		t.Error("a fresh demo reuses the old token")
	}
}

// bannerWriter signals when the banner has been printed.
type bannerWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	printed chan struct{}
	once    sync.Once
}

func (w *bannerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "Ctrl+C stops") {
		w.once.Do(func() { close(w.printed) })
	}
	return len(p), nil
}

func TestRunDemoStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &bannerWriter{printed: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- RunDemo(ctx, demoConfig(t, t.TempDir(), 1), nil, out) }()
	select {
	case <-out.printed:
	case err := <-done:
		t.Fatalf("RunDemo returned before the banner: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no banner within 20s")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunDemo: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunDemo did not return within 15s of the cancel")
	}
}

func TestRunDemoPortTaken(t *testing.T) {
	d, _ := startDemo(t, demoConfig(t, t.TempDir(), 1))
	cfg := demoConfig(t, t.TempDir(), 1)
	cfg.HTTPAddr = d.HTTPAddr()
	err := RunDemo(context.Background(), cfg, nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "http listener") {
		t.Fatalf("RunDemo on a taken port: %v, want an http listener error", err)
	}
}

func TestDemoStations(t *testing.T) {
	for _, n := range []int{1, 6, 12, 30} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			got := demoStations(n)
			if len(got) != n {
				t.Fatalf("%d stations, want %d", len(got), n)
			}
			seen := map[string]bool{}
			for _, s := range got {
				if !wire.ValidID(s.ID) || seen[s.ID] {
					t.Errorf("id %q invalid or repeated", s.ID)
				}
				seen[s.ID] = true
				if s.Name == "" || s.Slots < 8 || s.Slots > 24 {
					t.Errorf("station %+v: want a name and 8–24 slots", s)
				}
				if s.Lat < 52.3 || s.Lat > 52.7 || s.Lon < 13.1 || s.Lon > 13.7 {
					t.Errorf("station %s at %f,%f is not in Berlin", s.ID, s.Lat, s.Lon)
				}
			}
		})
	}
}

func TestDialAndBannerAddr(t *testing.T) {
	tests := []struct{ in, dial, banner string }{
		{"127.0.0.1:8000", "127.0.0.1:8000", "127.0.0.1:8000"},
		{"[::]:8000", "127.0.0.1:8000", "localhost:8000"},
		{"0.0.0.0:1883", "127.0.0.1:1883", "localhost:1883"},
		{":8000", "127.0.0.1:8000", "localhost:8000"},
		{"192.168.1.5:8000", "192.168.1.5:8000", "192.168.1.5:8000"},
		{"[::1]:8000", "[::1]:8000", "[::1]:8000"},
	}
	for _, tc := range tests {
		if got := dialAddr(tc.in); got != tc.dial {
			t.Errorf("dialAddr(%q) = %q, want %q", tc.in, got, tc.dial)
		}
		if got := bannerAddr(tc.in); got != tc.banner {
			t.Errorf("bannerAddr(%q) = %q, want %q", tc.in, got, tc.banner)
		}
	}
}

func TestDemoRefusesToWipeARunningDemo(t *testing.T) {
	dir := t.TempDir()
	running, _ := startDemo(t, demoConfig(t, dir, 1))
	_, err := StartDemo(context.Background(), demoConfig(t, dir, 1), nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second demo on the same data dir: %v, want an in-use error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := client.New("http://"+running.HTTPAddr(), running.UserToken()).Do(ctx, http.MethodGet, "/api/bookings", nil, nil); err != nil {
		t.Fatalf("the running demo lost its data: %v", err)
	}
}
