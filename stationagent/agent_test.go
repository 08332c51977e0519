package stationagent

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/wire"
)

func TestContractTopicsQoSRetained(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	obs := newObserver(t, b.URL(), "observer")
	cfg := testConfig(t, b.URL(), t.TempDir())
	r := startAgent(t, cfg)
	sid := cfg.StationID

	st := obs.next(t, "status online", isTopic(sid, wire.KindStatus))
	if st.QoS != 1 {
		t.Errorf("status QoS = %d, want 1", st.QoS)
	}
	status := decode[wire.Status](t, st)
	if !status.Online || status.BootID == "" || status.Slots != 4 || status.AgentVersion == "" || status.TS.IsZero() {
		t.Errorf("status = %+v", status)
	}
	if status.BootID != r.A.BootID() {
		t.Errorf("boot id %q, agent says %q", status.BootID, r.A.BootID())
	}

	tm := obs.next(t, "first telemetry", isTopic(sid, wire.KindTelemetry))
	if tm.QoS != 1 || tm.Retained {
		t.Errorf("telemetry QoS=%d retained=%v, want 1/false", tm.QoS, tm.Retained)
	}
	tel := decode[wire.Telemetry](t, tm)
	if tel.Seq != 1 || !tel.Full || len(tel.Slots) != 4 || tel.BootID != status.BootID {
		t.Errorf("first telemetry = seq %d full %v slots %d boot %s", tel.Seq, tel.Full, len(tel.Slots), tel.BootID)
	}
	if err := tel.Validate(4); err != nil {
		t.Errorf("telemetry invalid: %v", err)
	}

	// A late subscriber gets the status as a retained message.
	late := newObserver(t, b.URL(), "late")
	ls := late.next(t, "retained status", isTopic(sid, wire.KindStatus))
	if !ls.Retained || ls.QoS != 1 {
		t.Errorf("late status retained=%v qos=%d, want true/1", ls.Retained, ls.QoS)
	}

	// reserve, then unlock for that booking: both acked ok on the ack topic.
	exp := time.Now().Add(time.Hour).UTC()
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c1", Action: wire.ActionReserve, Slot: 2, BookingID: "bk1", ExpiresAt: exp})
	am := obs.next(t, "ack c1", isTopic(sid, wire.KindAck))
	if am.QoS != 1 || am.Retained {
		t.Errorf("ack QoS=%d retained=%v", am.QoS, am.Retained)
	}
	if ack := decode[wire.Ack](t, am); ack != (wire.Ack{ID: "c1", OK: true}) {
		t.Errorf("ack c1 = %+v", ack)
	}
	if got := r.A.Status().Reservations; len(got) != 1 || got[0].Slot != 2 || got[0].BookingID != "bk1" {
		t.Errorf("reservations = %+v", got)
	}

	// unlock of another booking is refused
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c2", Action: wire.ActionUnlock, Slot: 2, BookingID: "other"})
	if ack := decode[wire.Ack](t, obs.next(t, "ack c2", isTopic(sid, wire.KindAck))); ack.OK || ack.ID != "c2" || ack.Error == "" {
		t.Errorf("ack c2 = %+v, want an error", ack)
	}
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c3", Action: wire.ActionUnlock, Slot: 2, BookingID: "bk1"})
	if ack := decode[wire.Ack](t, obs.next(t, "ack c3", isTopic(sid, wire.KindAck))); !ack.OK {
		t.Errorf("ack c3 = %+v", ack)
	}
	// The door opening shows in a delta.
	obs.next(t, "delta with slot 2 open", func(m msg) bool {
		if m.Topic != wire.Topic(sid, wire.KindTelemetry) {
			return false
		}
		tel := decode[wire.Telemetry](t, m)
		for _, s := range tel.Slots {
			if s.Slot == 2 && s.Door == wire.DoorOpen && !s.Locked {
				return !tel.Full || true
			}
		}
		return false
	})

	// Other actions.
	avail := false
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c4", Action: wire.ActionSetAvailability, Slot: 3, Available: &avail})
	if ack := decode[wire.Ack](t, obs.next(t, "ack c4", isTopic(sid, wire.KindAck))); !ack.OK {
		t.Errorf("ack c4 = %+v", ack)
	}
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c5", Action: wire.ActionSnapshot})
	obs.next(t, "full telemetry after snapshot", func(m msg) bool {
		return m.Topic == wire.Topic(sid, wire.KindTelemetry) && decode[wire.Telemetry](t, m).Full
	})
	if ack := decode[wire.Ack](t, obs.next(t, "ack c5", ackFor(sid, "c5"))); !ack.OK {
		t.Errorf("ack c5 = %+v", ack)
	}
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "c6", Action: "explode"})
	if ack := decode[wire.Ack](t, obs.next(t, "ack c6", isTopic(sid, wire.KindAck))); ack.OK || ack.Error == "" {
		t.Errorf("ack c6 = %+v", ack)
	}

	// A clean stop publishes a retained offline status with the boot id.
	r.Stop(t)
	off := decode[wire.Status](t, obs.next(t, "offline status", isTopic(sid, wire.KindStatus)))
	if off.Online || off.BootID != status.BootID {
		t.Errorf("offline status = %+v", off)
	}
}

func TestWillOnKilledConnection(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	p := startProxy(t, b.Addr)
	cfg := testConfig(t, p.URL(), t.TempDir())
	r := startAgent(t, cfg)
	sid := cfg.StationID
	on := decode[wire.Status](t, b.next(t, "status online", isTopic(sid, wire.KindStatus)))
	if !on.Online {
		t.Fatalf("status = %+v", on)
	}
	testwait.For(t, testwait.Timeout, "session set up", func() bool { return r.A.Status().Connected })
	p.cut()
	will := b.next(t, "will", isTopic(sid, wire.KindStatus))
	ws := decode[wire.Status](t, will)
	if ws.Online || ws.BootID != on.BootID {
		t.Errorf("will = %+v, want offline with boot id %s", ws, on.BootID)
	}
	if !will.Retained {
		t.Errorf("will not retained")
	}
	// The agent comes back by itself with the same boot id and a full telemetry.
	again := decode[wire.Status](t, b.next(t, "status online again", isTopic(sid, wire.KindStatus)))
	if !again.Online || again.BootID != on.BootID {
		t.Errorf("status after reconnect = %+v", again)
	}
	b.next(t, "full telemetry after reconnect", func(m msg) bool {
		if m.Topic != wire.Topic(sid, wire.KindTelemetry) {
			return false
		}
		tel := decode[wire.Telemetry](t, m)
		return tel.Full && tel.Seq > 1
	})
	testwait.For(t, testwait.Timeout, "second connect counted", func() bool { return r.A.Status().Connects == 2 })
}

// seqLog checks the telemetry stream of one boot: after dropping exact
// duplicates of (boot_id, seq), seqs rise by one without a gap.
type seqLog struct {
	seen map[uint64][]byte
	last uint64
	dups int
}

func (l *seqLog) add(t *testing.T, m msg) wire.Telemetry {
	t.Helper()
	tel := decode[wire.Telemetry](t, m)
	if l.seen == nil {
		l.seen = map[uint64][]byte{}
	}
	if prev, ok := l.seen[tel.Seq]; ok {
		if !bytes.Equal(prev, m.Payload) {
			t.Fatalf("seq %d seen twice with different content", tel.Seq)
		}
		l.dups++
		return tel
	}
	if tel.Seq != l.last+1 {
		t.Fatalf("seq %d after %d: gap or reorder", tel.Seq, l.last)
	}
	l.seen[tel.Seq] = m.Payload
	l.last = tel.Seq
	return tel
}

func TestOutageTelemetryInOrder(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	addr := b.Addr
	cfg := testConfig(t, b.URL(), t.TempDir())
	cfg.Sim.Speed = 200 // SoC moves on every poll
	cfg.Sim.Occupied = 4
	r := startAgent(t, cfg)
	sid := cfg.StationID
	var log seqLog
	b.next(t, "status", isTopic(sid, wire.KindStatus))
	for log.last < 5 {
		log.add(t, b.next(t, "telemetry", isTopic(sid, wire.KindTelemetry)))
	}

	b.Close()
	testwait.For(t, testwait.Timeout, "agent to notice the outage", func() bool { return !r.A.Status().Connected })
	// Drain what reached the first broker.
	for drained := false; !drained; {
		select {
		case m := <-b.Msgs:
			if m.Topic == wire.Topic(sid, wire.KindTelemetry) {
				log.add(t, m)
			}
		default:
			drained = true
		}
	}
	queuedAtOutage := r.A.Status().LastSeqQueued
	testwait.For(t, testwait.Timeout, "telemetry queued during the outage", func() bool {
		s := r.A.Status()
		return s.LastSeqQueued >= queuedAtOutage+20 && s.OutboxDepth >= 20
	})

	b2 := startBroker(t, addr)
	st := decode[wire.Status](t, b2.next(t, "status on the new broker", isTopic(sid, wire.KindStatus)))
	if !st.Online {
		t.Fatalf("status = %+v", st)
	}
	target := queuedAtOutage + 20
	sawFull := false
	for log.last < target || !sawFull {
		tel := log.add(t, b2.next(t, "telemetry after the outage", isTopic(sid, wire.KindTelemetry)))
		if tel.Full && tel.Seq > target {
			sawFull = true // the full report that follows the reconnect
		}
	}
	testwait.For(t, testwait.Timeout, "outbox drained", func() bool { return r.A.Status().OutboxDepth == 0 })
	t.Logf("seqs 1..%d delivered in order; %d exact duplicates", log.last, log.dups)
}

func TestCommandNotExecutedTwice(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	obs := newObserver(t, b.URL(), "observer")
	dir := t.TempDir()
	cfg := testConfig(t, b.URL(), dir)
	cfg.Sim.TakeAfter = time.Hour // the door stays open
	sid := cfg.StationID
	cmdTopic := wire.Topic(sid, wire.KindCmd)

	drv := &countingDriver{Driver: newSim(t, cfg.Sim)}
	r := startAgent(t, cfg, WithDriver(drv))
	obs.next(t, "status", isTopic(sid, wire.KindStatus))

	exp := time.Now().Add(time.Hour)
	obs.publish(t, cmdTopic, wire.Command{ID: "r1", Action: wire.ActionReserve, Slot: 3, BookingID: "bk", ExpiresAt: exp})
	if a := decode[wire.Ack](t, obs.next(t, "ack r1", isTopic(sid, wire.KindAck))); !a.OK {
		t.Fatalf("reserve: %+v", a)
	}
	unlock := wire.Command{ID: "u1", Action: wire.ActionUnlock, Slot: 3, BookingID: "bk"}
	obs.publish(t, cmdTopic, unlock)
	first := decode[wire.Ack](t, obs.next(t, "ack u1", isTopic(sid, wire.KindAck)))
	if !first.OK {
		t.Fatalf("unlock: %+v", first)
	}
	obs.publish(t, cmdTopic, unlock)
	second := decode[wire.Ack](t, obs.next(t, "repeated ack u1", isTopic(sid, wire.KindAck)))
	if second != first {
		t.Errorf("repeated ack %+v, first %+v", second, first)
	}
	if n := drv.Unlocks(); n != 1 {
		t.Errorf("unlocks = %d, want 1", n)
	}
	r.Stop(t)

	// After a restart the id is still known: same ack, no execution.
	drv2 := &countingDriver{Driver: newSim(t, cfg.Sim)}
	r2 := startAgent(t, cfg, WithDriver(drv2))
	obs.next(t, "status after restart", func(m msg) bool {
		return m.Topic == wire.Topic(sid, wire.KindStatus) && decode[wire.Status](t, m).Online
	})
	obs.publish(t, cmdTopic, unlock)
	third := decode[wire.Ack](t, obs.next(t, "ack u1 after restart", isTopic(sid, wire.KindAck)))
	if third != first {
		t.Errorf("ack after restart %+v, first %+v", third, first)
	}
	if n := drv2.Unlocks(); n != 0 {
		t.Errorf("unlocks after restart = %d, want 0", n)
	}
	r2.Stop(t)
}

func TestReservationSurvivesRestart(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	obs := newObserver(t, b.URL(), "observer")
	cfg := testConfig(t, b.URL(), t.TempDir())
	sid := cfg.StationID
	r := startAgent(t, cfg)
	obs.next(t, "status", isTopic(sid, wire.KindStatus))
	off := false
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "a4", Action: wire.ActionSetAvailability, Slot: 4, Available: &off})
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "a2", Action: wire.ActionSetAvailability, Slot: 2, Available: &off})
	obs.next(t, "ack a2", ackFor(sid, "a2"))
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "r3", Action: wire.ActionReserve, Slot: 3, BookingID: "bk3", ExpiresAt: time.Now().Add(time.Hour)})
	if a := decode[wire.Ack](t, obs.next(t, "ack", ackFor(sid, "r3"))); !a.OK {
		t.Fatalf("reserve: %+v", a)
	}
	r.Stop(t)

	drv := newSim(t, cfg.Sim)
	r2 := startAgent(t, cfg, WithDriver(drv))
	testwait.For(t, testwait.Timeout, "agent running", func() bool { return r2.A.BootID() != "" })
	res := r2.A.Status().Reservations
	if len(res) != 1 || res[0].Slot != 3 || res[0].BookingID != "bk3" {
		t.Fatalf("reservations after restart = %+v", res)
	}
	testwait.For(t, testwait.Timeout, "indicator restored", func() bool { return drv.Indicator(3) })
	if drv.Available(2) || drv.Available(4) || !drv.Available(1) {
		t.Error("availability not restored after restart")
	}
	// The booking can still collect after the restart.
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "u3", Action: wire.ActionUnlock, Slot: 3, BookingID: "bk3"})
	if a := decode[wire.Ack](t, obs.next(t, "ack u3", func(m msg) bool {
		return m.Topic == wire.Topic(sid, wire.KindAck) && decode[wire.Ack](t, m).ID == "u3"
	})); !a.OK {
		t.Fatalf("unlock after restart: %+v", a)
	}
}

func TestReservationExpires(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	obs := newObserver(t, b.URL(), "observer")
	cfg := testConfig(t, b.URL(), t.TempDir())
	sid := cfg.StationID
	drv := newSim(t, cfg.Sim)
	r := startAgent(t, cfg, WithDriver(drv))
	obs.next(t, "status", isTopic(sid, wire.KindStatus))
	obs.publish(t, wire.Topic(sid, wire.KindCmd), wire.Command{ID: "r1", Action: wire.ActionReserve, Slot: 1, BookingID: "bk", ExpiresAt: time.Now().Add(300 * time.Millisecond)})
	if a := decode[wire.Ack](t, obs.next(t, "ack", isTopic(sid, wire.KindAck))); !a.OK {
		t.Fatalf("reserve: %+v", a)
	}
	if !drv.Indicator(1) {
		t.Error("indicator off after reserve")
	}
	testwait.For(t, testwait.Timeout, "reservation to expire", func() bool { return len(r.A.Status().Reservations) == 0 })
	if drv.Indicator(1) {
		t.Error("indicator still on after expiry")
	}
}

func TestOutboxCompaction(t *testing.T) {
	// Reserve a port, then leave it closed while telemetry piles up.
	b := startBroker(t, "127.0.0.1:0")
	addr := b.Addr
	b.Close()

	cfg := testConfig(t, "tcp://"+addr, t.TempDir())
	cfg.OutboxLimit = 5
	cfg.Sim.Speed = 200
	sid := cfg.StationID
	r := startAgent(t, cfg)
	testwait.For(t, testwait.Timeout, "telemetry past the bound", func() bool { return r.A.Status().LastSeqQueued >= 30 })
	if d := r.A.Status().OutboxDepth; d > cfg.OutboxLimit+1 {
		t.Fatalf("outbox depth %d exceeds the bound %d", d, cfg.OutboxLimit)
	}
	b2 := startBroker(t, addr)
	first := decode[wire.Telemetry](t, b2.next(t, "telemetry", isTopic(sid, wire.KindTelemetry)))
	if first.Seq <= 5 {
		t.Errorf("first seq after compaction = %d: old telemetry was not compacted", first.Seq)
	}
	// The queue holds a compaction snapshot; after it, seqs continue by one.
	prev := first
	gotFull := first.Full
	for i := 0; i < 6; i++ {
		tel := decode[wire.Telemetry](t, b2.next(t, "telemetry", isTopic(sid, wire.KindTelemetry)))
		if tel.Seq <= prev.Seq {
			t.Fatalf("seq %d after %d", tel.Seq, prev.Seq)
		}
		gotFull = gotFull || tel.Full
		prev = tel
	}
	if !gotFull {
		t.Error("no full snapshot among the compacted queue")
	}
}

func TestBackoffJitter(t *testing.T) {
	min, max := 100*time.Millisecond, 2*time.Second
	seen := map[time.Duration]bool{}
	for attempt := 1; attempt <= 10; attempt++ {
		ceil := min << (attempt - 1)
		if ceil > max {
			ceil = max
		}
		for i := 0; i < 50; i++ {
			d := backoff(min, max, attempt)
			if d < ceil/2 || d > ceil {
				t.Fatalf("attempt %d: %v outside [%v, %v]", attempt, d, ceil/2, ceil)
			}
			seen[d] = true
		}
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct delays: no jitter", len(seen))
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cfg := testConfig(t, "tcp://127.0.0.1:1", t.TempDir())
	for name, mut := range map[string]func(*Config){
		"no server":   func(c *Config) { c.Server = "" },
		"bad scheme":  func(c *Config) { c.Server = "http://x:1" },
		"bad id":      func(c *Config) { c.StationID = "-x" },
		"no secret":   func(c *Config) { c.Secret = "" },
		"no driver":   func(c *Config) { c.Driver = "" },
		"bad driver":  func(c *Config) { c.Driver = "can" },
		"bad slots":   func(c *Config) { c.Sim.Slots = 9999 },
		"bad level":   func(c *Config) { c.LogLevel = "loud" },
		"bad modbus":  func(c *Config) { c.Driver = DriverModbus },
		"tiny outbox": func(c *Config) { c.OutboxLimit = 1 },
	} {
		t.Run(name, func(t *testing.T) {
			c := cfg
			mut(&c)
			_, err := New(c)
			if err == nil {
				t.Fatal("New accepted a bad config")
			}
			if !errorsIsConfig(err) {
				t.Errorf("error %v does not wrap ErrConfig", err)
			}
		})
	}
}

func TestDataDirLocked(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	cfg := testConfig(t, b.URL(), t.TempDir())
	r := startAgent(t, cfg)
	testwait.For(t, testwait.Timeout, "first agent running", func() bool { return r.A.BootID() != "" })
	a2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = a2.Run(t.Context())
	if err == nil || !errorsIs(err, ErrDataDirLocked) {
		t.Fatalf("second agent on the same data dir: %v", err)
	}
}

func TestSeveralAgentsInOneProcess(t *testing.T) {
	b := startBroker(t, "127.0.0.1:0")
	for i := range 3 {
		cfg := testConfig(t, b.URL(), t.TempDir())
		cfg.StationID = fmt.Sprintf("st-%d", i)
		startAgent(t, cfg)
	}
	online := map[string]bool{}
	for len(online) < 3 {
		m := b.next(t, "statuses", func(m msg) bool {
			sid, kind, ok := wire.ParseTopic(m.Topic)
			return ok && kind == wire.KindStatus && sid != ""
		})
		sid, _, _ := wire.ParseTopic(m.Topic)
		online[sid] = decode[wire.Status](t, m).Online
	}
	_ = sim.Config{}
}
