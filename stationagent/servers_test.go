package stationagent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.mqtt.golang/packets"
	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// TestConfigServerList: server is one URL, a comma-separated string or a
// YAML sequence; STATIONAGENT_SERVER is comma-separated and replaces the
// file's list; a bad entry is named in one line.
func TestConfigServerList(t *testing.T) {
	const rest = "station_id: st-1\nsecret: s\ndriver: sim\n"
	env := func(v string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if k == "STATIONAGENT_SERVER" && v != "" {
				return v, true
			}
			return "", false
		}
	}
	for name, tc := range map[string]struct {
		file, env string
		want      []string
		err       string
	}{
		"one":          {file: "server: tcp://a:1883\n" + rest, want: []string{"tcp://a:1883"}},
		"comma string": {file: "server: tcp://a:1883, ssl://b:8883\n" + rest, want: []string{"tcp://a:1883", "ssl://b:8883"}},
		"block sequence": {
			file: "server:\n  - tcp://a:1883\n  - tcp://b:1883\n  - mqtts://c:8883\n" + rest,
			want: []string{"tcp://a:1883", "tcp://b:1883", "mqtts://c:8883"},
		},
		"flow sequence":         {file: "server: [tcp://a:1883, tcp://b:1883]\n" + rest, want: []string{"tcp://a:1883", "tcp://b:1883"}},
		"env replaces the list": {file: "server: [tcp://a:1883, tcp://b:1883]\n" + rest, env: "tcp://x:1,tcp://y:2", want: []string{"tcp://x:1", "tcp://y:2"}},
		"env one":               {file: rest, env: "ssl://x:8883", want: []string{"ssl://x:8883"}},
		"bad scheme in a list":  {file: "server: [tcp://a:1883, ftp://b:21]\n" + rest, err: `server "ftp://b:21": scheme must be tcp:// or ssl://`},
		"bad env entry":         {file: rest, env: "tcp://a:1883,tcp://b", err: `server "tcp://b": want tcp://host:port`},
		"empty entry":           {file: "server: tcp://a:1883,,tcp://b:1883\n" + rest, err: "entry 2 is empty"},
		"twice":                 {file: "server: [tcp://a:1883, tcp://a:1883]\n" + rest, err: `server "tcp://a:1883" is listed twice`},
		"nested item":           {file: "server:\n  - [tcp://a:1883]\n" + rest, err: "line 2: each item of server is one URL"},
		"empty sequence":        {file: "server: []\n" + rest, err: "server is required"},
		"unknown key after a list": {
			file: "server:\n  - tcp://a:1883\n  - tcp://b:1883\n" + rest + "reconect_max: 1m\n",
			err:  `line 7: unknown key "reconect_max" (did you mean "reconnect_max"?)`,
		},
		"wrong type after a list": {file: "server: [tcp://a:1883]\n" + rest + "keepalive: [1]\n", err: "line 5: cannot unmarshal !!seq"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "stationagent.yaml")
			if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := ReadConfig(p, env(tc.env))
			if err == nil {
				err = cfg.Validate()
			}
			if tc.err != "" {
				if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("error %v, want one config line with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Servers(); !slices.Equal(got, tc.want) {
				t.Errorf("Servers() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRotationPolicy: a failed server is followed at once by the next; a
// whole round of failures waits the backoff, growing each round; a lost
// link waits the first step and goes on with the next server; a round in
// which every server refused the credentials waits ReconnectMax (jittered);
// one server behaves as before lists existed.
func TestRotationPolicy(t *testing.T) {
	const min, max = 100 * time.Millisecond, 10 * time.Second
	down := errors.New("connection refused")
	refused := fmt.Errorf("connect: %w", packets.ErrorRefusedNotAuthorised)
	type step struct {
		up      bool
		err     error
		next    string
		wait    bool
		lo, hi  time.Duration
		refused bool
	}
	step1 := [2]time.Duration{min / 2, min}
	step2 := [2]time.Duration{min, 2 * min}
	step3 := [2]time.Duration{2 * min, 4 * min}
	slow := [2]time.Duration{max / 2, max}
	for name, tc := range map[string]struct {
		servers []string
		steps   []step
	}{
		"one server": {servers: []string{"a"}, steps: []step{
			{err: down, next: "a", wait: true, lo: step1[0], hi: step1[1]},
			{err: down, next: "a", wait: true, lo: step2[0], hi: step2[1]},
			{up: true, err: errConnLost, next: "a", wait: true, lo: step1[0], hi: step1[1]},
			{err: refused, next: "a", wait: true, lo: slow[0], hi: slow[1], refused: true},
			{err: down, next: "a", wait: true, lo: step2[0], hi: step2[1]},
		}},
		"three servers": {servers: []string{"a", "b", "c"}, steps: []step{
			{err: down, next: "b"},
			{err: down, next: "c"},
			{err: down, next: "a", wait: true, lo: step1[0], hi: step1[1]},
			{err: down, next: "b"},
			{err: down, next: "c"},
			{err: down, next: "a", wait: true, lo: step2[0], hi: step2[1]},
			{err: down, next: "b"},
			{up: true, err: errConnLost, next: "c", wait: true, lo: step1[0], hi: step1[1]},
			{err: down, next: "a"},
			{err: down, next: "b"},
			{err: down, next: "c", wait: true, lo: step2[0], hi: step2[1]},
			{err: down, next: "a"},
			{err: down, next: "b"},
			{err: down, next: "c", wait: true, lo: step3[0], hi: step3[1]},
		}},
		"every server refuses": {servers: []string{"a", "b"}, steps: []step{
			{err: refused, next: "b"},
			{err: refused, next: "a", wait: true, lo: slow[0], hi: slow[1], refused: true},
			{err: refused, next: "b"},
			{err: refused, next: "a", wait: true, lo: slow[0], hi: slow[1], refused: true},
		}},
		"one refuses, one is down": {servers: []string{"a", "b"}, steps: []step{
			{err: refused, next: "b"},
			{err: down, next: "a", wait: true, lo: step1[0], hi: step1[1]},
		}},
	} {
		t.Run(name, func(t *testing.T) {
			r := newRotation(tc.servers, min, max)
			if r.current() != tc.servers[0] {
				t.Fatalf("starts with %s", r.current())
			}
			for i, s := range tc.steps {
				d, wait, allRefused := r.after(s.up, s.err)
				if r.current() != s.next || wait != s.wait || allRefused != s.refused {
					t.Fatalf("step %d: next %s, wait %v, all refused %v; want %s, %v, %v", i, r.current(), wait, allRefused, s.next, s.wait, s.refused)
				}
				if wait && (d < s.lo || d > s.hi) {
					t.Errorf("step %d: delay %v, want between %v and %v", i, d, s.lo, s.hi)
				}
			}
		})
	}
}

// freeAddr is a 127.0.0.1 address nothing listens on (until a test starts
// a broker there).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// drainTelemetry adds what already reached b to log.
func drainTelemetry(t *testing.T, b *broker, sid string, log *seqLog) {
	t.Helper()
	for {
		select {
		case m := <-b.Msgs:
			if m.Topic == wire.Topic(sid, wire.KindTelemetry) {
				log.add(t, m)
			}
		default:
			return
		}
	}
}

// TestFailoverToNextServer: with two servers up, closing the one the agent
// is on moves it to the other; the telemetry continues there without a
// gap (what the first did not acknowledge is sent again), the reservation
// is still held and a command already executed through the first server is
// answered from history, not executed again.
func TestFailoverToNextServer(t *testing.T) {
	a := startBroker(t, "127.0.0.1:0")
	b := startBroker(t, "127.0.0.1:0")
	cfg := testConfig(t, a.URL()+","+b.URL(), t.TempDir())
	cfg.Sim.Speed = 200 // SoC moves on every poll
	sid := cfg.StationID
	cmdTopic := wire.Topic(sid, wire.KindCmd)
	drv := &countingDriver{Driver: newSim(t, cfg.Sim)}
	r := startAgent(t, cfg, WithDriver(drv))

	obsA := newObserver(t, a.URL(), "observer-a")
	a.next(t, "status on the first server", isTopic(sid, wire.KindStatus))
	if s := r.A.Status(); s.Broker != a.URL() || !slices.Equal(s.Servers, []string{a.URL(), b.URL()}) {
		t.Fatalf("status: broker %s, servers %q", s.Broker, s.Servers)
	}
	obsA.publish(t, cmdTopic, wire.Command{ID: "r2", Action: wire.ActionReserve, Slot: 2, BookingID: "bk2", ExpiresAt: time.Now().Add(time.Hour)})
	if ack := decode[wire.Ack](t, obsA.next(t, "ack r2", ackFor(sid, "r2"))); !ack.OK {
		t.Fatalf("reserve: %+v", ack)
	}
	unlock := wire.Command{ID: "u2", Action: wire.ActionUnlock, Slot: 2, BookingID: "bk2"}
	var log seqLog
	for log.last < 5 {
		log.add(t, a.next(t, "telemetry on the first server", isTopic(sid, wire.KindTelemetry)))
	}

	a.Close()
	drainTelemetry(t, a, sid, &log)
	st := decode[wire.Status](t, b.next(t, "status on the second server", isTopic(sid, wire.KindStatus)))
	if !st.Online || st.BootID != r.A.BootID() {
		t.Fatalf("status on the second server = %+v", st)
	}
	drainTelemetry(t, a, sid, &log) // anything a delivered before it closed
	testwait.For(t, testwait.Timeout, "the agent on the second server", func() bool {
		s := r.A.Status()
		return s.Connected && s.Broker == b.URL()
	})
	target := r.A.Status().LastSeqQueued + 5
	for log.last < target {
		log.add(t, b.next(t, "telemetry on the second server", isTopic(sid, wire.KindTelemetry)))
	}
	testwait.For(t, testwait.Timeout, "the second server acknowledged them", func() bool { return r.A.Status().LastSeqAcked >= target })

	res := r.A.Status().Reservations
	if len(res) != 1 || res[0].Slot != 2 || res[0].BookingID != "bk2" {
		t.Fatalf("reservations after the switch = %+v", res)
	}
	obsB := newObserver(t, b.URL(), "observer-b")
	obsB.publish(t, cmdTopic, wire.Command{ID: "r2", Action: wire.ActionReserve, Slot: 2, BookingID: "bk2", ExpiresAt: time.Now().Add(time.Hour)})
	if ack := decode[wire.Ack](t, obsB.next(t, "r2 again", ackFor(sid, "r2"))); !ack.OK {
		t.Fatalf("repeated reserve: %+v", ack)
	}
	obsB.publish(t, cmdTopic, unlock)
	first := decode[wire.Ack](t, obsB.next(t, "ack u2", ackFor(sid, "u2")))
	if !first.OK {
		t.Fatalf("unlock of the held slot on the second server: %+v", first)
	}
	obsB.publish(t, cmdTopic, unlock)
	if again := decode[wire.Ack](t, obsB.next(t, "repeated ack u2", ackFor(sid, "u2"))); again != first {
		t.Errorf("repeated ack %+v, first %+v", again, first)
	}
	if n := drv.Unlocks(); n != 1 {
		t.Errorf("unlocks = %d, want 1", n)
	}
	t.Logf("seqs 1..%d in order over two servers; %d exact duplicates", log.last, log.dups)
}

// TestOutboxReplayedToAnotherServer: three servers; the agent's is closed
// while the other two are down; telemetry queues through rounds of failed
// connects, and when the third server comes up the agent finds it and
// replays the whole outbox there in order, without a gap.
func TestOutboxReplayedToAnotherServer(t *testing.T) {
	a := startBroker(t, "127.0.0.1:0")
	bAddr, cAddr := freeAddr(t), freeAddr(t)
	cfg := testConfig(t, strings.Join([]string{a.URL(), "tcp://" + bAddr, "tcp://" + cAddr}, ","), t.TempDir())
	cfg.Sim.Speed = 200
	sid := cfg.StationID
	logs := make(chan slog.Record, 10000)
	r := startAgent(t, cfg, WithLogger(slog.New(recordHandler{logs})))
	var log seqLog
	a.next(t, "status", isTopic(sid, wire.KindStatus))
	for log.last < 5 {
		log.add(t, a.next(t, "telemetry on the first server", isTopic(sid, wire.KindTelemetry)))
	}
	a.Close()
	testwait.For(t, testwait.Timeout, "agent to notice the outage", func() bool { return !r.A.Status().Connected })
	drainTelemetry(t, a, sid, &log)

	// Two full rounds of failed connects (each ends with a wait) while
	// telemetry queues.
	rounds := 0
	deadline := time.After(10 * time.Second)
	for rounds < 2 {
		select {
		case rec := <-logs:
			// After the lost link a round is b, c, a: it ends with a failed connect to a.
			if rec.Message == "mqtt disconnected" && strings.HasPrefix(attr(rec, "err").String(), "connect "+a.URL()) {
				rounds++
			}
			if rec.Message == "mqtt connected" && attr(rec, "server").String() != a.URL() {
				t.Fatalf("connected to %v with every server down", attr(rec, "server"))
			}
		case <-deadline:
			t.Fatalf("saw %d failed rounds in 10s, want 2", rounds)
		}
	}
	queued := r.A.Status().LastSeqQueued
	testwait.For(t, testwait.Timeout, "telemetry queued during the outage", func() bool { return r.A.Status().OutboxDepth >= 20 })

	c := startBroker(t, cAddr)
	st := decode[wire.Status](t, c.next(t, "status on the third server", isTopic(sid, wire.KindStatus)))
	if !st.Online {
		t.Fatalf("status = %+v", st)
	}
	for log.last < queued+20 {
		log.add(t, c.next(t, "telemetry on the third server", isTopic(sid, wire.KindTelemetry)))
	}
	testwait.For(t, testwait.Timeout, "the third server acknowledged the outbox", func() bool { return r.A.Status().LastSeqAcked >= queued+20 })
	if s := r.A.Status(); s.Broker != "tcp://"+cAddr {
		t.Errorf("status: broker %s, want the third server", s.Broker)
	}
	t.Logf("seqs 1..%d in order; %d exact duplicates", log.last, log.dups)
}

// TestFirstServerDown: the first server of the list is down from the
// start; the agent goes on to the second at once (no backoff wait before
// it) and connects there.
func TestFirstServerDown(t *testing.T) {
	dead := "tcp://" + freeAddr(t)
	b := startBroker(t, "127.0.0.1:0")
	cfg := testConfig(t, dead+", "+b.URL(), t.TempDir())
	cfg.ReconnectMin = time.Hour // a wait would show as a timeout
	cfg.ReconnectMax = time.Hour
	logs := make(chan slog.Record, 1000)
	r := startAgent(t, cfg, WithLogger(slog.New(recordHandler{logs})))
	b.next(t, "status on the second server", isTopic(cfg.StationID, wire.KindStatus))
	var moved bool
	for done := false; !done; {
		select {
		case rec := <-logs:
			switch rec.Message {
			case "mqtt connect failed, trying the next server":
				if attr(rec, "server").String() != dead || attr(rec, "next").String() != b.URL() {
					t.Errorf("moved from %v to %v", attr(rec, "server"), attr(rec, "next"))
				}
				moved = true
			case "mqtt disconnected":
				t.Errorf("waited %v after the first server failed", attr(rec, "retry_in"))
			case "mqtt connected":
				if got := attr(rec, "server").String(); got != b.URL() {
					t.Errorf("connected to %s", got)
				}
				done = true
			}
		default:
			t.Fatal("no mqtt connected record although the second server saw the status")
		}
	}
	if !moved {
		t.Error("no record of moving on from the first server")
	}
	testwait.For(t, testwait.Timeout, "status connected to the second server", func() bool {
		s := r.A.Status()
		return s.Connected && s.Broker == b.URL()
	})
}

// TestEveryServerRefusing: two servers refusing the station's secret: each
// round moves from the first to the second at once, then waits
// ReconnectMax (jittered); the hint is logged once over all rounds; when
// one server accepts the secret, the agent connects there.
func TestEveryServerRefusing(t *testing.T) {
	refuse := func() *auth.Ledger {
		return &auth.Ledger{Auth: auth.AuthRules{{Username: "st-1", Password: "the-right-one", Allow: true}}, ACL: auth.ACLRules{{Client: "*"}}}
	}
	var urls []string
	var ledgers []*auth.Ledger
	for range 2 {
		l := refuse()
		mb := mqtttest.StartBroker(t, "", l, nil)
		urls = append(urls, mb.URL())
		ledgers = append(ledgers, l)
	}
	cfg := testConfig(t, strings.Join(urls, ","), t.TempDir())
	cfg.Secret = "a-wrong-one"
	cfg.ReconnectMin = time.Millisecond
	cfg.ReconnectMax = 200 * time.Millisecond
	logs := make(chan slog.Record, 1000)
	r := startAgent(t, cfg, WithLogger(slog.New(recordHandler{logs})))

	hints, rounds, moves := 0, 0, 0
	deadline := time.After(10 * time.Second)
	for rounds < 3 {
		select {
		case rec := <-logs:
			switch rec.Message {
			case "mqtt credentials refused":
				hints++
				if got := attr(rec, "server").String(); got != cfg.Server {
					t.Errorf("hint names server %q, want the list %q", got, cfg.Server)
				}
			case "mqtt connect failed, trying the next server":
				moves++
				if attr(rec, "server").String() != urls[0] || attr(rec, "next").String() != urls[1] {
					t.Errorf("moved from %v to %v", attr(rec, "server"), attr(rec, "next"))
				}
			case "mqtt disconnected":
				rounds++
				if attr(rec, "server").String() != urls[1] {
					t.Errorf("a round ended on %v, want the second server", attr(rec, "server"))
				}
				if !strings.Contains(attr(rec, "err").String(), "not Authorized") {
					t.Fatalf("disconnected for %v, want a refusal", attr(rec, "err"))
				}
				if d := attr(rec, "retry_in").Duration(); d < cfg.ReconnectMax/2 || d > cfg.ReconnectMax {
					t.Errorf("round %d retries in %v, want between %v and %v", rounds, d, cfg.ReconnectMax/2, cfg.ReconnectMax)
				}
			case "mqtt connected":
				t.Fatal("connected with a wrong secret")
			}
		case <-deadline:
			t.Fatalf("saw %d refused rounds in 10s, want 3", rounds)
		}
	}
	if hints != 1 {
		t.Errorf("hint logged %d times over %d rounds, want once", hints, rounds)
	}
	if moves < rounds {
		t.Errorf("%d moves to the second server in %d rounds", moves, rounds)
	}

	ledgers[1].Update(&auth.Ledger{Auth: auth.AuthRules{{Username: "st-1", Password: "a-wrong-one", Allow: true}}, ACL: auth.ACLRules{{Client: "*"}}})
	testwait.For(t, testwait.Timeout, "the agent connected to the server that accepts the secret", func() bool {
		s := r.A.Status()
		return s.Connected && s.Broker == urls[1]
	})
}
