package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// testStations is the Stations the bridge provides in production: a fixed
// set of stations with their inventory.
type testStations struct {
	mu  sync.Mutex
	inv map[string]wire.Inventory
}

func (s *testStations) InventorySnapshots(sid string) ([]wire.InventoryUpdate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []wire.InventoryUpdate
	for id, inv := range s.inv {
		if sid == "" || sid == id {
			out = append(out, wire.InventoryUpdate{StationID: id, Inventory: inv, Snapshot: true})
		}
	}
	return out, nil
}

func (s *testStations) StationExists(sid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.inv[sid]
	return ok
}

// testAuth maps tokens to user ids.
type testAuth map[string]string

var errBadToken = errors.New("bad token")

func (a testAuth) UserForToken(tok string) (string, error) {
	if uid, ok := a[tok]; ok {
		return uid, nil
	}
	return "", errBadToken
}

// historyHook wraps the real store so a test can act while a resume reads
// the log.
type historyHook struct {
	*store.Store
	mu       sync.Mutex
	before   func() // runs once, before the first EventsAfter reads
	after    func() // runs once, after the first EventsAfter read
	fail     error  // returned by EventsAfter calls from number failFrom on
	calls    int
	failFrom int
}

func (h *historyHook) EventsAfter(ch store.Channel, since uint64, limit int) ([]store.Event, error) {
	h.mu.Lock()
	h.calls++
	if h.fail != nil && h.calls > h.failFrom {
		defer h.mu.Unlock()
		return nil, h.fail
	}
	before, after := h.before, h.after
	h.before, h.after = nil, nil
	h.mu.Unlock()
	if before != nil {
		before()
	}
	evs, err := h.Store.EventsAfter(ch, since, limit)
	if after != nil {
		after()
	}
	return evs, err
}

type env struct {
	t        testing.TB
	st       *store.Store
	hist     *historyHook
	hub      *Hub
	srv      *httptest.Server
	reg      *prometheus.Registry
	stations *testStations
	wsURL    string
}

func newEnv(t testing.TB, cfg Config, opts store.Options) *env {
	t.Helper()
	opts.NoSync = true
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), opts)
	if err != nil {
		t.Fatalf("store.Open: %v", err)
	}
	e := &env{t: t, st: st, hist: &historyHook{Store: st}, reg: prometheus.NewRegistry()}
	e.stations = &testStations{inv: map[string]wire.Inventory{
		"s1": {AvailableBatteries: 3, TotalSlots: 8, EmptySlots: 5},
		"s2": {AvailableBatteries: 1, ChargingBatteries: 2, TotalSlots: 4, EmptySlots: 1},
	}}
	cfg.Registerer = e.reg
	e.hub, err = NewHub(cfg, e.hist, e.stations, testAuth{"tok-u1": "u1", "tok-u2": "u2"})
	if err != nil {
		t.Fatalf("NewHub: %v", err)
	}
	st.SetCommitListener(e.hub.Publish)
	mux := http.NewServeMux()
	e.hub.Register(mux)
	e.srv = httptest.NewServer(mux)
	e.wsURL = "ws" + strings.TrimPrefix(e.srv.URL, "http")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.hub.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		e.srv.Close()
		st.Close()
	})
	return e
}

// append commits evs in one Update (so the hub publishes them) and returns
// them with their seqs.
func (e *env) append(evs ...store.Event) []store.Event {
	e.t.Helper()
	out, err := e.st.Update(context.Background(), func(tx *store.Tx) error {
		for i := range evs {
			ev := evs[i]
			if err := tx.Append(&ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		e.t.Fatalf("Update: %v", err)
	}
	return out
}

func stationEvent(sid string, n int) store.Event {
	f, _ := json.Marshal(wire.InventoryUpdate{StationID: sid, Inventory: wire.Inventory{AvailableBatteries: n, TotalSlots: 8}})
	return store.Event{Type: wire.TypeInventoryUpdate, StationID: sid, Fields: f}
}

func userEvent(uid, title string) store.Event {
	f, _ := json.Marshal(wire.Notification{Title: title, Message: "m", Level: wire.LevelInfo})
	return store.Event{Type: wire.TypeNotification, UserID: uid, Fields: f}
}

func (e *env) dial(path string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(e.wsURL+path, hdr)
}

func (e *env) mustDial(path string, hdr http.Header) *websocket.Conn {
	e.t.Helper()
	c, resp, err := e.dial(path, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial %s: %v (status %d)", path, err, status)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

// msg is a decoded server message.
type msg struct {
	Type      string `json:"type"`
	Seq       uint64 `json:"seq"`
	TS        string `json:"ts"`
	Channel   string `json:"channel"`
	Recovered bool   `json:"recovered"`
	Snapshot  bool   `json:"snapshot"`
	StationID string `json:"station_id"`
	Title     string `json:"title"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

func readMsg(t testing.TB, c *websocket.Conn) msg {
	t.Helper()
	m, err := tryRead(c, 10*time.Second)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return m
}

func tryRead(c *websocket.Conn, d time.Duration) (msg, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	mt, data, err := c.ReadMessage()
	if err != nil {
		return msg{}, err
	}
	if mt != websocket.TextMessage {
		return msg{}, fmt.Errorf("got message type %d, want text", mt)
	}
	var m msg
	if err := json.Unmarshal(data, &m); err != nil {
		return msg{}, fmt.Errorf("bad JSON %q: %w", data, err)
	}
	if m.Type == "" || m.TS == "" {
		return msg{}, fmt.Errorf("message without type or ts: %s", data)
	}
	return m, nil
}

// readUntil reads events until one with seq ≥ last and returns their seqs;
// it fails on a duplicate or out-of-order seq.
func readUntil(t testing.TB, c *websocket.Conn, last uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	for {
		m := readMsg(t, c)
		if m.Seq == 0 {
			t.Fatalf("unexpected %s message while reading events", m.Type)
		}
		if n := len(seqs); n > 0 && m.Seq <= seqs[n-1] {
			t.Fatalf("seq %d after %d: out of order or duplicate", m.Seq, seqs[n-1])
		}
		seqs = append(seqs, m.Seq)
		if m.Seq >= last {
			return seqs
		}
	}
}

// metricValue returns the value of a counter or gauge (by name and one label
// pair, or "" for none) from the env's registry.
func (e *env) metricValue(name, label, value string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					ok = true
				}
			}
			if !ok {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// waitFor polls cond until it holds or 10s pass. It waits on state the hub
// exposes only through metrics; it does not synchronise goroutines.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}
