package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

// testAdminToken is the admin token of the test servers (at least
// api.MinAdminTokenLen characters).
const testAdminToken = "server-test-admin-token-0123456789"

// testConfig is a config on random loopback ports in a fresh data dir.
func testConfig(t *testing.T) Config {
	t.Helper()
	cfg := Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminToken = testAdminToken
	return cfg
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	srv, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv
}

func TestSecondServerOnSameDataDirFailsFast(t *testing.T) {
	cfg := testConfig(t)
	startServer(t, cfg)
	_, err := New(cfg, nil)
	if err == nil {
		t.Fatal("a second swapd on the same data dir must fail")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("error should say the data dir is in use: %v", err)
	}
}

func TestPortTakenIsAClearError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig(t)
	cfg.HTTPAddr = ln.Addr().String()
	_, err = New(cfg, nil)
	if err == nil {
		t.Fatal("New must fail when the HTTP port is taken")
	}
	if !strings.Contains(err.Error(), "address already in use") || strings.Contains(err.Error(), "\n") {
		t.Errorf("want one line saying the address is in use, got %q", err)
	}
	// The data dir must be released again.
	ln.Close()
	srv2, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("data dir not released after a failed start: %v", err)
	}
	srv2.Shutdown(context.Background())
}

func TestAdminTokenGeneratedOnce(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdminToken = ""
	srv := startServer(t, cfg)
	tok, path := srv.AdminToken()
	if tok == "" || path != filepath.Join(cfg.DataDir, "admin.token") {
		t.Fatalf("token %q path %q", tok, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v, want 0600", st.Mode().Perm())
	}
	again, _, err := adminToken(cfg, slog.New(slog.DiscardHandler))
	if err != nil || again != tok {
		t.Errorf("the token must be stable across starts: %q vs %q (%v)", again, tok, err)
	}
}

// wsDial opens a WebSocket and returns a channel of decoded messages.
func wsDial(t *testing.T, url string, hdr http.Header) <-chan map[string]any {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(url, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { conn.Close() })
	ch := make(chan map[string]any, 256)
	go func() {
		defer close(ch)
		for {
			_, b, err := conn.ReadMessage()
			if err != nil {
				return
			}
			var m map[string]any
			if json.Unmarshal(b, &m) == nil {
				ch <- m
			}
		}
	}()
	return ch
}

// waitFor returns the first message of type typ (skipping others), failing
// the test after the deadline.
func waitFor(t *testing.T, ch <-chan map[string]any, typ string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				t.Fatalf("connection closed while waiting for %s", typ)
			}
			if m["type"] == typ && (match == nil || match(m)) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s within the deadline", typ)
		}
	}
}

// TestEndToEnd goes from a paho publish to WebSocket frames on all three
// endpoints, through the real broker, bridge, store and hub, and through a
// booking's reserve command and ack.
func TestEndToEnd(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg)
	ctx := context.Background()
	base := "http://" + srv.HTTPAddr()
	admin := client.New(base, cfg.AdminToken)

	st, err := admin.CreateStation(ctx, wire.CreateStationRequest{ID: "st-1", Name: "Test", Slots: 4, Lat: 1, Lon: 2})
	if err != nil {
		t.Fatal(err)
	}
	u, err := admin.CreateUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}

	wsBase := "ws://" + srv.HTTPAddr()
	all := wsDial(t, wsBase+"/ws/stations/", nil)
	one := wsDial(t, wsBase+"/ws/stations/st-1/", nil)
	user := wsDial(t, wsBase+"/ws/notifications/", http.Header{"Authorization": {"Bearer " + u.Token}})
	for name, ch := range map[string]<-chan map[string]any{"all": all, "one": one, "user": user} {
		h := waitFor(t, ch, "hello", nil)
		if name == "user" && h["channel"] != "user:alice" {
			t.Errorf("user hello channel %v", h["channel"])
		}
	}

	// The station connects and subscribes to its commands.
	cmds := make(chan wire.Command, 16)
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + srv.MQTTAddr()).
		SetClientID("st-1").SetUsername("st-1").SetPassword(st.Secret).
		SetCleanSession(false).SetAutoReconnect(false)
	station := mqtt.NewClient(opts)
	if tok := station.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("station connect: %v", tok.Error())
	}
	defer station.Disconnect(100)
	tok := station.Subscribe(wire.Topic("st-1", wire.KindCmd), 1, func(_ mqtt.Client, m mqtt.Message) {
		var c wire.Command
		if json.Unmarshal(m.Payload(), &c) == nil {
			cmds <- c
		}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	publish := func(kind wire.TopicKind, v any, retained bool) {
		t.Helper()
		b, _ := json.Marshal(v)
		tok := station.Publish(wire.Topic("st-1", kind), 1, retained, b)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", kind, tok.Error())
		}
	}
	publish(wire.KindStatus, wire.Status{Online: true, BootID: "boot-1", TS: time.Now(), Slots: 4}, true)
	bat := func(s string) *string { return &s }
	slots := []wire.Slot{
		{Slot: 1, BatteryID: bat("B-1"), SoC: 95, SoH: 98, TempC: 25, VoltageV: 52, Door: "closed", Locked: true},
		{Slot: 2, BatteryID: bat("B-2"), SoC: 60, SoH: 98, TempC: 30, VoltageV: 50, Charging: true, Door: "closed", Locked: true},
		{Slot: 3, Door: "closed", Locked: true},
		{Slot: 4, Door: "closed", Locked: true},
	}
	publish(wire.KindTelemetry, wire.Telemetry{BootID: "boot-1", Seq: 1, TS: time.Now(), Full: true, Slots: slots}, false)

	inv := func(m map[string]any) bool { return m["available_batteries"] == float64(1) }
	e1 := waitFor(t, all, "inventory_update", inv)
	e2 := waitFor(t, one, "inventory_update", inv)
	if e1["seq"] != e2["seq"] {
		t.Errorf("the same event must carry the same seq on every connection: %v vs %v", e1["seq"], e2["seq"])
	}
	if e1["station_id"] != "st-1" || e1["charging_batteries"] != float64(1) || e1["empty_slots"] != float64(2) || e1["total_slots"] != float64(4) {
		t.Errorf("inventory_update fields: %v", e1)
	}

	// A booking: the station gets reserve, acks it, the user hears of it.
	rider := client.New(base, u.Token)
	b, err := rider.Book(ctx, "st-1")
	if err != nil {
		t.Fatal(err)
	}
	if b.Slot != 1 || b.BatteryID != "B-1" {
		t.Errorf("booking must take the swappable battery: %+v", b)
	}
	var cmd wire.Command
	select {
	case cmd = <-cmds:
	case <-time.After(10 * time.Second):
		t.Fatal("no reserve command reached the station")
	}
	if cmd.Action != wire.ActionReserve || cmd.Slot != 1 || cmd.BookingID != b.ID || cmd.ID == "" {
		t.Fatalf("reserve command: %+v", cmd)
	}
	publish(wire.KindAck, wire.Ack{ID: cmd.ID, OK: true}, false)
	conf := waitFor(t, user, "booking_confirmed", nil)
	if conf["booking_id"] != b.ID || conf["battery_id"] != "B-1" {
		t.Errorf("booking_confirmed: %v", conf)
	}
	waitFor(t, user, "booking_ready", func(m map[string]any) bool { return m["booking_id"] == b.ID })
	waitFor(t, one, "battery_booked", func(m map[string]any) bool { return m["booking_id"] == b.ID })
	if got, err := rider.Booking(ctx, b.ID); err != nil || got.Status != wire.BookingStatusReady {
		t.Errorf("booking status %q (%v), want ready", got.Status, err)
	}

	// An admin notification reaches the user's channel only.
	if err := admin.Notify(ctx, "alice", wire.Notification{Title: "Hi", Message: "hello", Level: "info"}); err != nil {
		t.Fatal(err)
	}
	n := waitFor(t, user, "notification", func(m map[string]any) bool { return m["title"] == "Hi" })
	if n["level"] != "info" || n["message"] != "hello" {
		t.Errorf("notification: %v", n)
	}
}
