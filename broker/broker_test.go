package broker

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	mqtt "github.com/mochi-mqtt/server/v2"
	mpackets "github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

func TestConnectAuth(t *testing.T) {
	c := newCreds("S1", "secret-1", "inline", "secret-i")
	rec := newRecorder()
	b := startBroker(t, Config{}, c, rec)
	addr := b.Addr()

	tests := []struct {
		name, id, user, pass string
		reason               string // "" = accepted
	}{
		{"good credentials", "S1", "S1", "secret-1", ""},
		{"wrong secret", "S1", "S1", "secret-2", ReasonBadSecret},
		{"unknown station", "S9", "S9", "secret-1", ReasonUnknownStation},
		{"client id differs from username", "S2", "S1", "secret-1", ReasonClientIDMismatch},
		{"no password", "S1", "S1", "", ReasonNoPassword},
		{"invalid station id", "-bad", "-bad", "x", ReasonInvalidID},
		{"inline client id", "inline", "inline", "secret-i", ReasonReservedID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before float64
			if tt.reason == "" {
				before = value(t, b.m.connected)
			} else {
				before = value(t, b.m.refused[tt.reason])
			}
			cl, err := dial(t, stationOpts(addr, tt.id, tt.user, tt.pass))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("connect: %v", err)
				}
				rec.expect(t, "up", tt.id, "", "")
				if got := value(t, b.m.connected); got != before+1 {
					t.Errorf("stations_connected = %v, want %v", got, before+1)
				}
				if !b.Connected(tt.id) {
					t.Error("Connected = false for a connected station")
				}
				cl.Disconnect(0)
				rec.expect(t, "down", tt.id, "", "")
				return
			}
			if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
				t.Fatalf("connect error = %v, want CONNACK refusal (not authorised)", err)
			}
			if got := value(t, b.m.refused[tt.reason]); got != before+1 {
				t.Errorf("refused{%s} = %v, want %v", tt.reason, got, before+1)
			}
		})
	}
}

func TestCredentialCache(t *testing.T) {
	c := newCreds("S1", "one")
	cc := newCredCache(c, errNotFound, DefaultNegativeCacheTTL)

	for range 3 {
		if r, _ := cc.authenticate("S1", []byte("S1"), []byte("one"), true); r != "" {
			t.Fatalf("good secret refused: %s", r)
		}
	}
	if n := c.calls.Load(); n != 1 {
		t.Errorf("store lookups for a cached station = %d, want 1", n)
	}

	// Unknown ids are cached negatively.
	for range 5 {
		if r, _ := cc.authenticate("S2", []byte("S2"), []byte("two"), true); r != ReasonUnknownStation {
			t.Fatalf("unknown station: reason %q", r)
		}
	}
	if n := c.calls.Load(); n != 2 {
		t.Errorf("store lookups after 5 unknown connects = %d, want 2", n)
	}

	// Provisioning + Invalidate makes the new station usable at once.
	c.set("S2", "two")
	cc.invalidate("S2")
	if r, _ := cc.authenticate("S2", []byte("S2"), []byte("two"), true); r != "" {
		t.Fatalf("provisioned station refused: %s", r)
	}

	// Rotation + Invalidate: the old secret stops working.
	c.set("S1", "new")
	cc.invalidate("S1")
	if r, _ := cc.authenticate("S1", []byte("S1"), []byte("one"), true); r != ReasonBadSecret {
		t.Errorf("old secret after rotation: reason %q, want %q", r, ReasonBadSecret)
	}

	// A store failure is not an unknown station and is not cached.
	fail := newCredCache(credsFunc(func(string) ([32]byte, error) { return [32]byte{}, errors.New("disk on fire") }), errNotFound, DefaultNegativeCacheTTL)
	r, err := fail.authenticate("S1", []byte("S1"), []byte("x"), true)
	if r != ReasonStoreError || err == nil {
		t.Errorf("store failure: reason %q err %v", r, err)
	}
	if len(fail.neg) != 0 {
		t.Error("store failure was cached")
	}
}

type credsFunc func(string) ([32]byte, error)

func (f credsFunc) StationSecretHash(sid string) ([32]byte, error) { return f(sid) }

func TestACL(t *testing.T) {
	tests := []struct {
		sid, topic string
		write      bool
		want       bool
	}{
		{"S1", "swap/v1/stations/S1/status", true, true},
		{"S1", "swap/v1/stations/S1/telemetry", true, true},
		{"S1", "swap/v1/stations/S1/ack", true, true},
		{"S1", "swap/v1/stations/S1/cmd", true, false},
		{"S1", "swap/v1/stations/S2/telemetry", true, false},
		{"S1", "swap/v1/stations/S1/cmd", false, true},
		{"S1", "swap/v1/stations/S1/telemetry", false, false},
		{"S1", "swap/v1/stations/S2/cmd", false, false},
		{"S1", "swap/v1/stations/+/cmd", false, false},
		{"S1", "swap/v1/stations/#", false, false},
		{"S1", "#", false, false},
		{"S1", "$SYS/#", false, false},
		{"S1", "$share/g/swap/v1/stations/S1/cmd", false, false},
		{"S1", "swap/v1/stations/S1/cmd/x", false, false},
		{"S1", "swap/v1/stations/S1/telemetry ", true, false},
		{"S1", "", true, false},
		{"S", "swap/v1/stations/S1/telemetry", true, false},
	}
	for _, tt := range tests {
		if got := allowed(tt.sid, tt.topic, tt.write); got != tt.want {
			t.Errorf("allowed(%q, %q, write=%v) = %v, want %v", tt.sid, tt.topic, tt.write, got, tt.want)
		}
	}
}

func TestTopicsOutsideOwn(t *testing.T) {
	c := newCreds("S1", "one", "S2", "two")
	rec := newRecorder()
	b := startBroker(t, Config{}, c, rec)

	s2msgs, s2h := recvChan()
	s2 := mustDial(t, stationOpts(b.Addr(), "S2", "S2", "two"))
	rec.expect(t, "up", "S2", "", "")
	if err := wait(t, s2.Subscribe(wire.Topic("S2", wire.KindCmd), 1, s2h)); err != nil {
		t.Fatal(err)
	}
	s1 := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
	rec.expect(t, "up", "S1", "", "")

	// Subscriptions outside the station's own cmd get a failure code.
	subBefore := value(t, b.m.subDenied)
	for _, filter := range []string{wire.Topic("S2", wire.KindCmd), "swap/v1/stations/+/cmd", "#", wire.Topic("S1", wire.KindTelemetry)} {
		tok := s1.Subscribe(filter, 1, func(paho.Client, paho.Message) { t.Errorf("S1 received a message on %s", filter) })
		if err := wait(t, tok); err != nil {
			t.Fatal(err)
		}
		if code := tok.(*paho.SubscribeToken).Result()[filter]; code != 0x80 {
			t.Errorf("SUBACK code for %q = %#x, want 0x80", filter, code)
		}
	}
	if got := value(t, b.m.subDenied) - subBefore; got != 4 {
		t.Errorf("subscribes_denied_total grew by %v, want 4", got)
	}
	own := wire.Topic("S1", wire.KindCmd)
	tok := s1.Subscribe(own, 1, func(paho.Client, paho.Message) {})
	if err := wait(t, tok); err != nil {
		t.Fatal(err)
	}
	if code := tok.(*paho.SubscribeToken).Result()[own]; code != 1 {
		t.Errorf("SUBACK code for own cmd = %#x, want 1", code)
	}

	// Under MQTT 3.1.1 a refused publish closes the connection (the
	// protocol has no negative PUBACK); at QoS 0 and 1 alike, the handler
	// never sees it.
	for _, pub := range []struct {
		topic string
		qos   byte
	}{
		{wire.Topic("S2", wire.KindTelemetry), 0},
		{wire.Topic("S2", wire.KindTelemetry), 1},
		{wire.Topic("S2", wire.KindCmd), 1},
		{own, 0},
		{"other/topic", 1},
	} {
		pubBefore := value(t, b.m.pubDenied)
		lost := make(chan error, 1)
		s1.Disconnect(0)
		rec.expect(t, "down", "S1", "", "")
		s1 = mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one").
			SetWill(wire.Topic("S1", wire.KindStatus), `{"online":false}`, 1, true).
			SetConnectionLostHandler(notify(lost)))
		rec.expect(t, "up", "S1", "", "")
		s1.Publish(pub.topic, pub.qos, false, `{"evil":true}`)
		select {
		case <-lost:
		case <-time.After(waitFor):
			t.Fatalf("publish to %s at QoS %d: connection not closed", pub.topic, pub.qos)
		}
		rec.expect(t, "down", "S1", "", "") // no publish, and no Will, before it
		if got := value(t, b.m.pubDenied) - pubBefore; got != 1 {
			t.Errorf("publish to %s: publishes_denied_total grew by %v, want 1", pub.topic, got)
		}
		s1 = mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
		rec.expect(t, "up", "S1", "", "")
	}

	// S2 got none of S1's publishes to its cmd: the first thing it receives
	// is the server's command.
	if err := b.SendToStation("S2", []byte(`{"id":"c1"}`)); err != nil {
		t.Fatal(err)
	}
	if m := recvMsg(t, s2msgs); string(m.Payload()) != `{"id":"c1"}` {
		t.Errorf("S2 received %q first, want the server's command", m.Payload())
	}
}

func TestSendToStation(t *testing.T) {
	b := startBroker(t, Config{}, newCreds("S1", "one"), nil)
	msgs, h := recvChan()
	s1 := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
	if err := wait(t, s1.Subscribe(wire.Topic("S1", wire.KindCmd), 1, h)); err != nil {
		t.Fatal(err)
	}
	payload := `{"id":"c1","action":"unlock","slot":3}`
	if err := b.SendToStation("S1", []byte(payload)); err != nil {
		t.Fatal(err)
	}
	m := recvMsg(t, msgs)
	if m.Topic() != wire.Topic("S1", wire.KindCmd) || string(m.Payload()) != payload || m.Qos() != 1 || m.Retained() {
		t.Errorf("got topic %s payload %s qos %d retained %v", m.Topic(), m.Payload(), m.Qos(), m.Retained())
	}

	if err := b.SendToStation("bad/id", []byte(`{}`)); !errors.Is(err, wire.ErrInvalidID) {
		t.Errorf("bad id: err = %v", err)
	}
	if err := b.SendToStation("S1", bytes.Repeat([]byte("x"), wire.MaxPayload+1)); !errors.Is(err, ErrPayloadTooLarge) {
		t.Errorf("large payload: err = %v", err)
	}
	_ = b.Close()
	if err := b.SendToStation("S1", []byte(`{}`)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: err = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOversize(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)
	topic := wire.Topic("S1", wire.KindTelemetry)

	// Exactly 64 KiB is accepted.
	s1 := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
	rec.expect(t, "up", "S1", "", "")
	max := strings.Repeat("x", wire.MaxPayload)
	if err := wait(t, s1.Publish(topic, 1, false, max)); err != nil {
		t.Fatal(err)
	}
	if e := rec.next(t); e.what != "publish" || len(e.payload) != wire.MaxPayload {
		t.Fatalf("64 KiB publish: handler got %s of %d bytes", e.what, len(e.payload))
	}
	s1.Disconnect(0)
	rec.expect(t, "down", "S1", "", "")

	for _, size := range []int{wire.MaxPayload + 1, 200 << 10} {
		before := value(t, b.m.oversized)
		lost := make(chan error, 1)
		s1 := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one").
			SetConnectionLostHandler(notify(lost)))
		rec.expect(t, "up", "S1", "", "")
		tok := s1.Publish(topic, 1, false, strings.Repeat("y", size))
		testwait.Recv(t, lost, waitFor, "connection lost")
		// No publish reached the handler: the next event is the disconnect.
		rec.expect(t, "down", "S1", "", "")
		select {
		case <-tok.Done():
			if tok.Error() == nil {
				t.Errorf("%d bytes: publish acknowledged", size)
			}
		default:
		}
		if got := value(t, b.m.oversized); got != before+1 {
			t.Errorf("%d bytes: packets_oversized_total = %v, want %v", size, got, before+1)
		}
	}
}

func TestWillReachesHandler(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)
	status := wire.Topic("S1", wire.KindStatus)
	will := `{"online":false,"boot_id":"b1"}`

	var cc connCapture
	o := stationOpts(b.Addr(), "S1", "S1", "one").
		SetWill(status, will, 1, true).
		SetCustomOpenConnectionFn(cc.open)
	s1 := mustDial(t, o)
	rec.expect(t, "up", "S1", "", "")
	online := `{"online":true,"boot_id":"b1"}`
	if err := wait(t, s1.Publish(status, 1, true, online)); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "publish", "S1", wire.KindStatus, online)

	cc.kill()
	rec.expect(t, "publish", "S1", wire.KindStatus, will)
	rec.expect(t, "down", "S1", "", "")

	// The Will also went the normal MQTT way: it is the retained status.
	got := make(chan string, 1)
	if err := b.srv.Subscribe(status, 1, func(_ *mqtt.Client, _ mpackets.Subscription, pk mpackets.Packet) {
		got <- string(pk.Payload)
	}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != will {
			t.Errorf("retained status = %s, want the Will", p)
		}
	default:
		t.Error("no retained status after the Will")
	}
}

func TestWillTopicMustBeOwn(t *testing.T) {
	b := startBroker(t, Config{}, newCreds("S1", "one"), nil)
	o := stationOpts(b.Addr(), "S1", "S1", "one").SetWill(wire.Topic("S2", wire.KindStatus), `{"online":false}`, 1, true)
	_, err := dial(t, o)
	if !errors.Is(err, packets.ErrorRefusedNotAuthorised) {
		t.Fatalf("Will on another station's topic: connect err = %v", err)
	}
	if got := value(t, b.m.refused[ReasonWillDenied]); got != 1 {
		t.Errorf("refused{will_denied} = %v", got)
	}
}

func TestTakeover(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{}, newCreds("S1", "one"), rec)
	status := wire.Topic("S1", wire.KindStatus)

	first := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one").SetWill(status, `{"online":false,"boot_id":"b1"}`, 1, true))
	rec.expect(t, "up", "S1", "", "")
	second := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
	_ = first
	// The old session's end (its Will, then down) may be reported before
	// the new session is up, or only partly (the new session won the race
	// for the down), but never after it.
	var seen []string
	for {
		e := rec.next(t)
		seen = append(seen, e.what)
		if e.what == "up" {
			break
		}
	}
	switch strings.Join(seen, ",") {
	case "up", "publish,up", "publish,down,up":
	default:
		t.Fatalf("events before the new session is up: %v", seen)
	}
	if !b.Connected("S1") {
		t.Error("station not connected after takeover")
	}
	second.Disconnect(0)
	rec.expect(t, "down", "S1", "", "")
	if got := value(t, b.m.connected); got != 0 {
		t.Errorf("stations_connected = %v after the last disconnect", got)
	}
}

func TestStartErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err := New(Config{Addr: ln.Addr().String()}, newCreds())
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start()
	if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !strings.Contains(err.Error(), "in use") {
		t.Errorf("Start on a taken port: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Error(err)
	}
	if err := b.Start(); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}

	if _, err := New(Config{TLSAddr: ":0"}, newCreds()); err == nil {
		t.Error("TLS without certificate accepted")
	}
	if _, err := New(Config{SessionExpiry: -1}, newCreds()); err == nil {
		t.Error("negative session expiry accepted")
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("nil credentials accepted")
	}
	b2, err := New(Config{TLSAddr: "127.0.0.1:0", CertFile: "/nonexistent.pem", KeyFile: "/nonexistent.key"}, newCreds())
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Start(); err == nil || !strings.Contains(err.Error(), "nonexistent") {
		t.Errorf("Start with missing certificate: %v", err)
	}
	b2.Close()

	b3 := startBroker(t, Config{}, newCreds(), nil)
	if err := b3.Start(); !errors.Is(err, ErrStarted) {
		t.Errorf("second Start: %v", err)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := New(Config{Registerer: reg}, newCreds())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{
		"swapd_broker_connects_refused_total", "swapd_broker_publishes_denied_total",
		"swapd_broker_subscribes_denied_total", "swapd_broker_packets_oversized_total",
		"swapd_broker_handler_errors_total", "swapd_broker_stations_connected",
	} {
		if !names[n] {
			t.Errorf("metric %s not registered", n)
		}
	}
	// A second broker on the same registry is a clear error.
	if _, err := New(Config{Registerer: reg}, newCreds()); err == nil {
		t.Error("duplicate registration accepted")
	}
}

// TestBadPayloadIsAcknowledgedAndDropped: a payload the handler can never
// apply (wire.ErrBadPayload) is acknowledged and dropped, the connection
// stays up, and the next good message is handled; resending it could not
// help, and withholding the PUBACK would wedge the station forever.
func TestBadPayloadIsAcknowledgedAndDropped(t *testing.T) {
	rec := newRecorder()
	rec.fail = func(n int, sid string, kind wire.TopicKind, payload []byte) error {
		if string(payload) == "bad" {
			return fmt.Errorf("%w: test", wire.ErrBadPayload)
		}
		return nil
	}
	b := startBroker(t, Config{Registerer: prometheus.NewRegistry()}, newCreds("S1", "one"), rec)
	lost := make(chan error, 1)
	s1 := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one").SetConnectionLostHandler(notify(lost)))
	rec.expect(t, "up", "S1", "", "")
	topic := wire.Topic("S1", wire.KindTelemetry)
	if err := wait(t, s1.Publish(topic, 1, false, []byte("bad"))); err != nil {
		t.Fatalf("a malformed payload must still be acknowledged: %v", err)
	}
	rec.expect(t, "publish", "S1", wire.KindTelemetry, "bad")
	if err := wait(t, s1.Publish(topic, 1, false, []byte("good"))); err != nil {
		t.Fatalf("the connection must stay usable: %v", err)
	}
	rec.expect(t, "publish", "S1", wire.KindTelemetry, "good")
	select {
	case err := <-lost:
		t.Fatalf("connection lost after a malformed payload: %v", err)
	default:
	}
	if !s1.IsConnectionOpen() {
		t.Fatal("connection closed after a malformed payload")
	}
	if got := value(t, b.m.badPayloads); got != 1 {
		t.Errorf("payloads_rejected_total = %v, want 1", got)
	}
}
