package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

func TestHelloShapes(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	e.append(stationEvent("s1", 1), userEvent("u1", "first"))
	last := e.st.LastSeq()
	tests := []struct {
		path      string
		hdr       http.Header
		channel   string
		snapshots []string
	}{
		{"/ws/stations/", nil, "stations", []string{"s1", "s2"}},
		{"/ws/stations", nil, "stations", []string{"s1", "s2"}},
		{"/ws/notifications?token=tok-u1", nil, "user:u1", nil},
		{"/ws/stations/s2/", nil, "station:s2", []string{"s2"}},
		{"/ws/stations/s2", nil, "station:s2", []string{"s2"}},
		{"/ws/notifications/?token=tok-u1", nil, "user:u1", nil},
		{"/ws/notifications/", bearer("tok-u1"), "user:u1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			c := e.mustDial(tc.path, tc.hdr)
			h := readMsg(t, c)
			if h.Type != wire.TypeHello || h.Channel != tc.channel || h.Seq != last || h.Recovered {
				t.Fatalf("hello = %+v, want channel %s seq %d recovered false", h, tc.channel, last)
			}
			var got []string
			for range tc.snapshots {
				m := readMsg(t, c)
				if m.Type != wire.TypeInventoryUpdate || !m.Snapshot || m.Seq != last {
					t.Fatalf("snapshot = %+v, want inventory_update snapshot seq %d", m, last)
				}
				got = append(got, m.StationID)
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.snapshots) {
				t.Fatalf("snapshots for %v, want %v", got, tc.snapshots)
			}
			// The next message is live: the event appended now.
			var ev store.Event
			if strings.Contains(tc.channel, "user") {
				ev = e.append(userEvent("u1", "live"))[0]
			} else {
				ev = e.append(stationEvent("s2", 7))[0]
			}
			if m := readMsg(t, c); m.Seq != ev.Seq || m.Snapshot {
				t.Fatalf("live message = %+v, want seq %d", m, ev.Seq)
			}
			last = ev.Seq
		})
	}
}

// TestResumeNoGapNoDuplicate disconnects a client, appends events, and
// resumes it with since while more events are appended during the resume
// (before and after its history read). What it receives, before and after
// the disconnect, must equal what a client that never disconnected
// received.
func TestResumeNoGapNoDuplicate(t *testing.T) {
	for _, tc := range []struct{ path, resume string }{
		{"/ws/stations/", "/ws/stations/?since="},
		{"/ws/stations/s1/", "/ws/stations/s1/?since="},
		{"/ws/notifications/?token=tok-u1", "/ws/notifications/?token=tok-u1&since="},
	} {
		t.Run(tc.path, func(t *testing.T) {
			e := newEnv(t, Config{ReplayPage: 3}, store.Options{})
			mixed := func(n int) []store.Event {
				var evs []store.Event
				for i := range n {
					evs = append(evs, stationEvent("s1", i), stationEvent("s2", i), userEvent("u1", "n"), userEvent("u2", "n"))
				}
				return evs
			}
			e.append(mixed(2)...)

			steady := e.mustDial(tc.path, nil)
			h := readMsg(t, steady)
			mover := e.mustDial(tc.path, nil)
			readMsg(t, mover)
			skipSnapshots := func(c *websocket.Conn, n int) {
				for range n {
					if m := readMsg(t, c); !m.Snapshot {
						t.Fatalf("want snapshot, got %+v", m)
					}
				}
			}
			nSnap := map[string]int{"stations": 2, "station:s1": 1}[h.Channel]
			skipSnapshots(steady, nSnap)
			skipSnapshots(mover, nSnap)

			first := e.append(mixed(3)...)
			marker1 := first[len(first)-1].Seq
			before := readUntil(t, mover, marker1-3) // up to one of the channel's events, not the last
			mover.Close()
			since := before[len(before)-1]

			e.append(mixed(4)...) // missed while away
			e.hist.mu.Lock()
			e.hist.before = func() { e.append(mixed(2)...) }
			e.hist.after = func() { e.append(mixed(2)...) }
			e.hist.mu.Unlock()

			resumed := e.mustDial(tc.resume+itoa(since), nil)
			h2 := readMsg(t, resumed)
			if h2.Type != wire.TypeHello || !h2.Recovered {
				t.Fatalf("hello after resume = %+v, want recovered", h2)
			}
			tail := e.append(mixed(2)...)
			end := tail[len(tail)-1].Seq
			// The last event of the channel decides where to stop.
			var endCh uint64
			for _, ev := range tail {
				if channelOf(h.Channel).Matches(&ev) {
					endCh = ev.Seq
				}
			}
			_ = end
			after := readUntil(t, resumed, endCh)
			all := readUntil(t, steady, endCh)
			got := append(slices.Clone(before), after...)
			if !slices.Equal(got, all) {
				t.Fatalf("resumed client saw %v\nsteady client saw %v", got, all)
			}
			if v := e.metricValue("swapd_ws_resumes_total", "recovered", "true"); v != 1 {
				t.Fatalf("resumes{recovered=true} = %v, want 1", v)
			}
		})
	}
}

func channelOf(name string) store.Channel {
	switch {
	case name == "stations":
		return store.Channel{Kind: store.AllStations}
	case strings.HasPrefix(name, "station:"):
		return store.Channel{Kind: store.OneStation, ID: strings.TrimPrefix(name, "station:")}
	}
	return store.Channel{Kind: store.OneUser, ID: strings.TrimPrefix(name, "user:")}
}

func itoa(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

func TestResumeNotRecovered(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{Retention: store.Retention{MaxAge: -1, MaxEvents: 3}})
	for i := range 10 {
		e.append(stationEvent("s1", i))
	}
	if _, err := e.st.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	last := e.st.LastSeq()
	for _, since := range []string{"1", itoa(last + 5)} {
		t.Run("since="+since, func(t *testing.T) {
			c := e.mustDial("/ws/stations/s1/?since="+since, nil)
			h := readMsg(t, c)
			if h.Recovered || h.Seq != last {
				t.Fatalf("hello = %+v, want recovered false seq %d", h, last)
			}
			if m := readMsg(t, c); !m.Snapshot || m.StationID != "s1" || m.Seq != last {
				t.Fatalf("want s1 snapshot with hello seq, got %+v", m)
			}
		})
	}
	if v := e.metricValue("swapd_ws_resumes_total", "recovered", "false"); v != 2 {
		t.Fatalf("resumes{recovered=false} = %v, want 2", v)
	}
	// Within retention it recovers and replays.
	c := e.mustDial("/ws/stations/s1/?since="+itoa(last-1), nil)
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("hello = %+v, want recovered", h)
	}
	if m := readMsg(t, c); m.Seq != last {
		t.Fatalf("replayed %+v, want seq %d", m, last)
	}
}

func TestRefusedBeforeUpgrade(t *testing.T) {
	e := newEnv(t, Config{MaxConnsPerIP: -1}, store.Options{})
	tests := []struct {
		name   string
		path   string
		hdr    http.Header
		status int
		code   string
	}{
		{"notifications without token", "/ws/notifications/", nil, 401, "unauthorized"},
		{"notifications bad token", "/ws/notifications/?token=nope", nil, 401, "unauthorized"},
		{"notifications bad bearer", "/ws/notifications/", bearer("nope"), 401, "unauthorized"},
		{"unknown station", "/ws/stations/s9/", nil, 404, "station_not_found"},
		{"malformed station", "/ws/stations/-x/", nil, 404, "station_not_found"},
		{"deeper path", "/ws/stations/s1/x/", nil, 404, "not_found"},
		{"notifications subpath", "/ws/notifications/x", bearer("tok-u1"), 404, "not_found"},
		{"bad since", "/ws/stations/?since=abc", nil, 400, "bad_since"},
		{"negative since", "/ws/stations/?since=-1", nil, 400, "bad_since"},
		{"foreign origin", "/ws/stations/", http.Header{"Origin": {"https://evil.example"}}, 403, "origin_not_allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := e.dial(tc.path, tc.hdr)
			if err == nil {
				c.Close()
				t.Fatalf("dial succeeded, want %d", tc.status)
			}
			if resp == nil {
				t.Fatalf("dial: %v (no response)", err)
			}
			var body wire.ErrorBody
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("error body: %v", err)
			}
			if resp.StatusCode != tc.status || body.Error.Code != tc.code || body.Error.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
		})
	}
	t.Run("plain GET", func(t *testing.T) {
		resp, err := http.Get(e.srv.URL + "/ws/stations/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUpgradeRequired {
			t.Fatalf("status %d, want 426", resp.StatusCode)
		}
	})
	t.Run("allowed origins", func(t *testing.T) {
		for _, o := range []string{"http://localhost:3000", "http://127.0.0.1:5173", e.srv.URL} {
			c := e.mustDial("/ws/stations/", http.Header{"Origin": {o}})
			if h := readMsg(t, c); h.Type != wire.TypeHello {
				t.Fatalf("origin %s: got %+v", o, h)
			}
		}
	})
}

func TestOriginPolicy(t *testing.T) {
	p, err := newOriginPolicy([]string{"https://app.example.com", "https://*.swap.test"})
	if err != nil {
		t.Fatal(err)
	}
	for origin, want := range map[string]bool{
		"":                            true,
		"https://app.example.com":     true,
		"HTTPS://APP.EXAMPLE.COM":     true,
		"http://app.example.com":      false,
		"https://a.swap.test":         true,
		"https://swap.test":           false,
		"https://evilswap.test":       false,
		"http://localhost:3000":       false, // an explicit list replaces the localhost default
		"https://server.internal:443": true,  // same origin as the request
		"null":                        false,
		"file://":                     false,
	} {
		r, _ := http.NewRequest("GET", "http://server.internal:443/ws/stations/", nil)
		if origin != "" {
			r.Header.Set("Origin", origin)
		}
		if got := p.allowed(r); got != want {
			t.Errorf("allowed(%q) = %v, want %v", origin, got, want)
		}
	}
	for _, bad := range []string{"example.com", "https://*", "https://a.*.com", "https://x/y"} {
		if _, err := newOriginPolicy([]string{bad}); err == nil {
			t.Errorf("newOriginPolicy(%q) accepted", bad)
		}
	}
}

func TestStationTokenRequired(t *testing.T) {
	e := newEnv(t, Config{RequireStationToken: true}, store.Options{})
	if _, resp, err := e.dial("/ws/stations/", nil); err == nil || resp == nil || resp.StatusCode != 401 {
		t.Fatalf("without token: err %v, want 401", err)
	}
	c := e.mustDial("/ws/stations/s1/", bearer("tok-u2"))
	if h := readMsg(t, c); h.Channel != "station:s1" {
		t.Fatalf("hello %+v", h)
	}
}

func TestGarbageGetsErrorAndSocketLives(t *testing.T) {
	e := newEnv(t, Config{ReadLimit: 1024}, store.Options{})
	c := e.mustDial("/ws/notifications/", bearer("tok-u1"))
	readMsg(t, c)
	send := []struct {
		mt   int
		data string
		code string
	}{
		{websocket.TextMessage, `{"type":`, CodeBadJSON},
		{websocket.TextMessage, `[1,2]`, CodeBadJSON},
		{websocket.TextMessage, `"ping"`, CodeBadJSON},
		{websocket.TextMessage, `{"type":"subscribe"}`, CodeUnknownType},
		{websocket.TextMessage, `{}`, CodeUnknownType},
		{websocket.BinaryMessage, `{"type":"ping"}`, CodeBinaryFrame},
		{websocket.TextMessage, `{"type":"ping","pad":"` + strings.Repeat("x", 5000) + `"}`, CodeMessageTooLarge},
		{websocket.TextMessage, `{"type":"ping"}`, ""},
	}
	for _, s := range send {
		if err := c.WriteMessage(s.mt, []byte(s.data)); err != nil {
			t.Fatalf("write: %v", err)
		}
		m := readMsg(t, c)
		if s.code == "" {
			if m.Type != wire.TypePong {
				t.Fatalf("ping answered by %+v", m)
			}
			continue
		}
		if m.Type != wire.TypeError || m.Code != s.code || m.Message == "" {
			t.Fatalf("%.40q answered by %+v, want error %s", s.data, m, s.code)
		}
	}
	ev := e.append(userEvent("u1", "still here"))[0]
	if m := readMsg(t, c); m.Seq != ev.Seq || m.Title != "still here" {
		t.Fatalf("after garbage got %+v", m)
	}
	// Over the hard limit (16 × ReadLimit, at least 64 KiB) the server
	// sends 1009 and drops the socket; the client may see the close frame or,
	// as the rest of its message is unread, a reset.
	_ = c.WriteMessage(websocket.TextMessage, make([]byte, 70<<10))
	var err error
	for err == nil {
		_, err = tryRead(c, 10*time.Second)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("socket still open after a huge message: %v", err)
	}
	if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code != websocket.CloseMessageTooBig {
		t.Fatalf("close %d, want 1009", ce.Code)
	}
}

func TestProtocolPing(t *testing.T) {
	e := newEnv(t, Config{PingInterval: 20 * time.Millisecond, PongTimeout: 10 * time.Second}, store.Options{})
	// A client that answers pings (gorilla does while reading) stays.
	c := e.mustDial("/ws/stations/s1/", nil)
	pings := make(chan struct{}, 16)
	c.SetPingHandler(func(data string) error {
		select {
		case pings <- struct{}{}:
		default:
		}
		return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	msgs := make(chan msg, 16)
	go func() {
		defer close(msgs)
		for {
			m, err := tryRead(c, 10*time.Second)
			if err != nil {
				return
			}
			msgs <- m
		}
	}()
	for range 3 {
		select {
		case <-pings:
		case <-time.After(10 * time.Second):
			t.Fatal("no protocol ping within 10s")
		}
	}
	ev := e.append(stationEvent("s1", 1))[0]
	for m := range msgs {
		if m.Seq == ev.Seq {
			return
		}
	}
	t.Fatal("answering client lost its connection")
}

func TestPongTimeout(t *testing.T) {
	e := newEnv(t, Config{PingInterval: 20 * time.Millisecond, PongTimeout: 50 * time.Millisecond}, store.Options{})
	// A client that ignores pings is closed with 1008.
	deaf := e.mustDial("/ws/stations/s1/", nil)
	deaf.SetPingHandler(func(string) error { return nil })
	var err error
	for err == nil {
		_, err = tryRead(deaf, 10*time.Second)
	}
	if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
		t.Fatalf("deaf client: %v, want close 1008", err)
	}
}

// TestSlowClientClosed: a client that never reads is closed once its queue
// overflows, while another client on the same channel receives everything.
func TestSlowClientClosed(t *testing.T) {
	e := newEnv(t, Config{QueueMessages: 16, QueueBytes: 256 << 10, WriteTimeout: 500 * time.Millisecond}, store.Options{})
	stalled := e.mustDial("/ws/stations/", nil)
	fast := e.mustDial("/ws/stations/", nil)
	for _, c := range []*websocket.Conn{stalled, fast} {
		for range 3 { // hello and two snapshots
			readMsg(t, c)
		}
	}
	progress := make(chan uint64, 64)
	go func() {
		defer close(progress)
		for {
			m, err := tryRead(fast, 10*time.Second)
			if err != nil {
				return
			}
			progress <- m.Seq
		}
	}()
	var seqs []uint64

	// Publish 8 KiB events straight into the hub (as the store's listener
	// does) until the stalled client's queue overflows.
	pad := strings.Repeat("x", 8<<10)
	seq := e.st.LastSeq()
	var want []uint64
	deadline := time.Now().Add(20 * time.Second)
	for e.metricValue("swapd_ws_slow_client_closes_total", "", "") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stalled client never closed")
		}
		var evs []store.Event
		for range 8 {
			seq++
			evs = append(evs, store.Event{Seq: seq, StationID: "s1", Type: wire.TypeInventoryUpdate,
				Data: wire.EncodeEvent(nil, wire.TypeInventoryUpdate, seq, time.Now(), []byte(`{"station_id":"s1","pad":"`+pad+`"}`))})
			want = append(want, seq)
		}
		e.hub.Publish(evs)
		// The fast client reads the batch before the next one is published.
		for len(seqs) == 0 || seqs[len(seqs)-1] < seq {
			s, ok := <-progress
			if !ok {
				t.Fatalf("fast client lost its connection after %d events", len(seqs))
			}
			seqs = append(seqs, s)
		}
	}
	if !slices.Equal(seqs, want) {
		t.Fatalf("fast client got %d events (last %v), want %d", len(seqs), seqs[max(0, len(seqs)-1):], len(want))
	}
	// The stalled client finds the end of its stream: a close frame
	// (1013) after what was buffered, or a reset if the write timed out.
	var err error
	for err == nil {
		_, err = tryRead(stalled, 10*time.Second)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("stalled client still open: %v", err)
	}
	// gorilla reports a connection cut mid-frame as 1006.
	if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code != websocket.CloseTryAgainLater && ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("close code %d, want 1013 (or 1006 after a write timeout)", ce.Code)
	}
	waitFor(t, "stations gauge to drop", func() bool {
		return e.metricValue("swapd_ws_connections", "channel", "stations") == 1
	})
}

func TestShutdownCloses1001(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	var conns []*websocket.Conn
	for _, p := range []string{"/ws/stations/", "/ws/stations/s1/", "/ws/notifications/?token=tok-u1"} {
		c := e.mustDial(p, nil)
		readMsg(t, c)
		conns = append(conns, c)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			var err error
			for err == nil {
				_, err = tryRead(c, 10*time.Second)
			}
			errs[i] = err
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.hub.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	wg.Wait()
	for i, err := range errs {
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("conn %d: %v, want close 1001", i, err)
		}
	}
	if err := e.hub.Shutdown(ctx); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, resp, err := e.dial("/ws/stations/", nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v, want 503", err)
	}
	e.hub.Publish(e.append(stationEvent("s1", 1))) // no-op, must not panic
}

func TestDisconnectAllKeepsAccepting(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	c := e.mustDial("/ws/stations/", nil)
	readMsg(t, c)
	if n := e.hub.DisconnectAll(websocket.CloseServiceRestart, "maintenance"); n != 1 {
		t.Fatalf("DisconnectAll closed %d connections, want 1", n)
	}
	var err error
	for err == nil {
		_, err = tryRead(c, 10*time.Second)
	}
	if !websocket.IsCloseError(err, websocket.CloseServiceRestart) {
		t.Fatalf("got %v, want close 1012", err)
	}
	again := e.mustDial("/ws/stations/?since=0", nil)
	if m := readMsg(t, again); m.Type != "hello" {
		t.Fatalf("after DisconnectAll a new connection must get hello, got %v", m)
	}
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, Config{MaxConnsPerIP: 3, MaxConnsPerUser: 1}, store.Options{})
	u := e.mustDial("/ws/notifications/", bearer("tok-u1"))
	readMsg(t, u)
	if _, resp, err := e.dial("/ws/notifications/", bearer("tok-u1")); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second socket of u1: %v, want 429", err)
	}
	e.mustDial("/ws/stations/", nil)
	e.mustDial("/ws/stations/", nil)
	if _, resp, err := e.dial("/ws/stations/", nil); err == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth socket from one IP: %v, want 429", err)
	}
	// Closing frees the slot once the server has seen it.
	u.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	if _, err := tryRead(u, 10*time.Second); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("close reply: %v", err)
	}
	waitFor(t, "user gauge to drop", func() bool {
		return e.metricValue("swapd_ws_connections", "channel", "user") == 0
	})
	e.mustDial("/ws/notifications/", bearer("tok-u2"))
}

func TestClientReplyShapes(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var pong wire.Pong
	if err := json.Unmarshal(clientReply(websocket.TextMessage, []byte(` {"type":"ping","x":1}`), false, now), &pong); err != nil || pong.Type != "pong" || !pong.TS.Equal(now) {
		t.Fatalf("pong = %+v, %v", pong, err)
	}
	var em wire.ErrorMsg
	long := `{"type":"` + strings.Repeat("é", 40) + `"}`
	if err := json.Unmarshal(clientReply(websocket.TextMessage, []byte(long), false, now), &em); err != nil || em.Code != CodeUnknownType || len(em.Message) > 200 {
		t.Fatalf("error = %+v, %v", em, err)
	}
}

// TestFrameLengths checks the hub's own framing against gorilla's reader for
// every length class (7-bit, 16-bit and 64-bit lengths).
func TestFrameLengths(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	c := e.mustDial("/ws/stations/s1/", nil)
	readMsg(t, c)
	readMsg(t, c)
	sizes := []int{1, 125, 126, 65535, 65536, 70000}
	for i, n := range sizes {
		e.hub.Publish([]store.Event{{Seq: uint64(100 + i), StationID: "s1", Data: []byte(strings.Repeat("a", n))}})
	}
	for _, n := range sizes {
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		mt, data, err := c.ReadMessage()
		if err != nil || mt != websocket.TextMessage || len(data) != n {
			t.Fatalf("size %d: got type %d len %d err %v", n, mt, len(data), err)
		}
	}
	var b batch
	b.closeFrame(websocket.CloseGoingAway, strings.Repeat("r", 300))
	if len(b.buf) != 2+125 || b.buf[1] != 125 {
		t.Fatalf("close frame of %d bytes, want 127", len(b.buf))
	}
}

func TestShutdownContextExpired(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	for range 3 {
		readMsg(t, e.mustDial("/ws/stations/", nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := e.hub.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with an ended context: %v, want context.Canceled", err)
	}
	// Shutdown returned only after every connection's goroutines ended.
	if v := e.metricValue("swapd_ws_connections", "channel", "stations"); v != 0 {
		t.Fatalf("%v connections left after Shutdown", v)
	}
}

func TestHistoryFailureCloses1011(t *testing.T) {
	e := newEnv(t, Config{}, store.Options{})
	e.append(stationEvent("s1", 1), stationEvent("s1", 2))
	e.hist.mu.Lock()
	e.hist.fail = errors.New("disk on fire")
	e.hist.mu.Unlock()
	c := e.mustDial("/ws/stations/?since=1", nil)
	_, err := tryRead(c, 10*time.Second)
	if !websocket.IsCloseError(err, websocket.CloseInternalServerErr) {
		t.Fatalf("got %v, want close 1011", err)
	}
}

// TestReplayInterrupted: when retention overtakes a replay, the client gets
// the events before the gap and a 1013 close, and nothing after the gap
// (not even live events queued meanwhile).
func TestReplayInterrupted(t *testing.T) {
	e := newEnv(t, Config{ReplayPage: 2}, store.Options{})
	evs := e.append(stationEvent("s1", 1), stationEvent("s1", 2), stationEvent("s1", 3), stationEvent("s1", 4))
	e.hist.mu.Lock()
	e.hist.fail = fmt.Errorf("test: %w", store.ErrCompacted)
	e.hist.failFrom = 1
	e.hist.before = func() { e.append(stationEvent("s1", 5)) }
	e.hist.mu.Unlock()
	c := e.mustDial("/ws/stations/s1/?since=0", nil)
	if h := readMsg(t, c); !h.Recovered {
		t.Fatalf("hello %+v", h)
	}
	for _, ev := range evs[:2] {
		if m := readMsg(t, c); m.Seq != ev.Seq {
			t.Fatalf("got %+v, want seq %d", m, ev.Seq)
		}
	}
	m, err := tryRead(c, 10*time.Second)
	if !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("after the gap: %+v, %v; want close 1013", m, err)
	}
}

// TestBurstOverBounds: one Publish (one commit's events) larger than the
// queue bounds reaches a client that keeps up, in full.
func TestBurstOverBounds(t *testing.T) {
	const bound = 16
	e := newEnv(t, Config{QueueMessages: bound, QueueBytes: 1 << 20}, store.Options{})
	c := e.mustDial("/ws/stations/", nil)
	for range 3 { // hello and two snapshots
		readMsg(t, c)
	}
	n := (burstLimit - 1) * bound // far over the bounds, within the burst limit
	seq := e.st.LastSeq() + 1000
	evs := make([]store.Event, 0, n)
	for range n {
		seq++
		evs = append(evs, store.Event{Seq: seq, StationID: "s1", Type: wire.TypeInventoryUpdate,
			Data: wire.EncodeEvent(nil, wire.TypeInventoryUpdate, seq, time.Now(), []byte(`{"station_id":"s1"}`))})
	}
	e.hub.Publish(evs)
	if got := readUntil(t, c, seq); len(got) != n {
		t.Fatalf("got %d events of a %d-event burst", len(got), n)
	}
	if v := e.metricValue("swapd_ws_slow_client_closes_total", "", ""); v != 0 {
		t.Fatalf("%v slow closes after a burst the client kept up with", v)
	}
}

// TestBurstBounds checks the queue rule on a client whose writer does not
// run (as during its handshake), so nothing drains: a burst may pass the
// bounds up to burstLimit times; the next burst finds the queue over them
// and closes the client; so does a single burst past the limit.
func TestBurstBounds(t *testing.T) {
	const bound = 16
	e := newEnv(t, Config{QueueMessages: bound, QueueBytes: 1 << 20}, store.Options{})
	frame := []byte(`{"type":"inventory_update"}`)
	var seq uint64
	fill := func(c *client, burst uint64, n int) {
		for range n {
			seq++
			c.enqueueEvent(seq, frame, burst)
		}
	}
	c := &client{hub: e.hub}
	fill(c, 1, burstLimit*bound)
	if !c.open() || len(c.queue) != burstLimit*bound {
		t.Fatalf("burst of %d closed the client (queue %d)", burstLimit*bound, len(c.queue))
	}
	fill(c, 2, 1)
	if c.open() {
		t.Fatal("a new burst found the queue over its bounds and did not close the client")
	}

	c = &client{hub: e.hub}
	fill(c, 1, burstLimit*bound+1)
	if c.open() {
		t.Fatal("a burst past the burst limit did not close the client")
	}

	c = &client{hub: e.hub}
	fill(c, 1, bound-1)
	fill(c, 2, 1)
	if !c.open() {
		t.Fatal("a queue within its bounds at a burst's start closed the client")
	}
}
