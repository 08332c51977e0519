package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/wire"
)

// countingDriver is the sim driver counting the actions commands cause.
type countingDriver struct {
	*sim.Driver
	mu       sync.Mutex
	reserves map[int]int // SetIndicator(on) per slot
	unlocks  map[int]int
}

func newCountingDriver(t *testing.T, cfg sim.Config) *countingDriver {
	t.Helper()
	d, err := sim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &countingDriver{Driver: d, reserves: map[int]int{}, unlocks: map[int]int{}}
}

func (d *countingDriver) SetIndicator(ctx context.Context, n int, on bool) error {
	if on {
		d.mu.Lock()
		d.reserves[n]++
		d.mu.Unlock()
	}
	return d.Driver.SetIndicator(ctx, n, on)
}

func (d *countingDriver) Unlock(ctx context.Context, n int) error {
	d.mu.Lock()
	d.unlocks[n]++
	d.mu.Unlock()
	return d.Driver.Unlock(ctx, n)
}

func (d *countingDriver) counts(n int) (reserves, unlocks int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reserves[n], d.unlocks[n]
}

// runAgent runs an agent until the test ends.
func runAgent(t *testing.T, cfg stationagent.Config, drv stationagent.Driver) *stationagent.Agent {
	t.Helper()
	a, err := stationagent.New(cfg, stationagent.WithDriver(drv), stationagent.WithLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("agent did not stop within 15s")
		}
	})
	return a
}

// TestNetworkFaults puts the fault proxy between a real agent and the real
// broker and bridge, and goes through dropped connections, delay, packets
// cut in the middle, a black hole and refused connections while bookings
// are made and collected. The agent must recover by itself each time; at
// the end every telemetry seq of its boot has been accepted (none lost,
// redeliveries byte-identical) and every reserve and unlock ran exactly
// once on the hardware.
func TestNetworkFaults(t *testing.T) {
	t.Parallel() // waits on timers and reconnects more than it computes
	const (
		sid    = "NF-1"
		secret = "nf-secret-1"
		slots  = 6
	)
	s := newStack(t, bridge.Config{
		ReadySoC:        1, // every healthy battery is swappable: bookings become ready at once
		CommandRetry:    100 * time.Millisecond,
		CommandRetryMax: 500 * time.Millisecond,
		CommandTimeout:  2 * time.Minute,
		TickInterval:    50 * time.Millisecond,
	})
	s.provision(t, sid, secret, slots)
	proxy, err := NewProxy(s.brk.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	drv := newCountingDriver(t, sim.Config{Slots: slots, Occupied: slots, Seed: 7, Speed: 30, ReturnEvery: -1, TakeAfter: time.Second})
	a := runAgent(t, stationagent.Config{
		Server: "tcp://" + proxy.Addr(), StationID: sid, Secret: secret, DataDir: t.TempDir(),
		Driver: stationagent.DriverSim, ControlSocket: "off",
		PollInterval: 50 * time.Millisecond, SnapshotInterval: time.Hour,
		KeepAlive: time.Second, ConnectTimeout: 2 * time.Second,
		ReconnectMin: 20 * time.Millisecond, ReconnectMax: 300 * time.Millisecond,
	}, drv)

	// progress waits until the server accepted telemetry beyond what it had
	// when called, i.e. the link works again. A snapshot command makes the
	// agent report even when no slot changes (a reconnect does too: the
	// first telemetry after a connect is full).
	snaps := 0
	progress := func(what string) {
		t.Helper()
		before, _ := s.rec.seqs(a.BootID())
		snaps++
		cmd, _ := json.Marshal(wire.Command{ID: fmt.Sprintf("snap-%d", snaps), Action: wire.ActionSnapshot})
		if err := s.brk.SendToStation(sid, cmd); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, 30*time.Second, what+": telemetry accepted again", func() bool {
			now, _ := s.rec.seqs(a.BootID())
			return a.Status().Connected && now > before
		})
	}
	progress("first connect")

	ctx := context.Background()
	var bookings []wire.Booking
	book := func(uid string) {
		t.Helper()
		s.user(t, uid)
		b, err := s.b.Book(ctx, uid, sid)
		if err != nil {
			t.Fatalf("book for %s: %v", uid, err)
		}
		bookings = append(bookings, b)
	}

	// 1. A booking, then the connection is dropped at once.
	book("u-drop")
	if n := proxy.Drop(); n != 1 {
		t.Errorf("dropped %d connections, want the agent's one", n)
	}
	progress("after drop")

	// 2. Delay on every chunk.
	proxy.SetDelay(30 * time.Millisecond)
	book("u-delay")
	progress("with delay")
	proxy.SetDelay(0)

	// 3. Connections cut in the middle of a packet, three times.
	for i := range 3 {
		if i == 1 {
			book("u-cut")
		}
		proxy.CutNext(1)
		testwait.For(t, 10*time.Second, "a cut", func() bool { return proxy.Stats().Cuts > int64(i) })
		progress("after cut")
	}

	// 4. Black hole: the link swallows everything until the broker's
	// keepalive closes it; new connections are swallowed too.
	book("u-blackhole")
	proxy.SetBlackHole(true)
	accepted := proxy.Stats().Accepted
	testwait.For(t, 15*time.Second, "the agent to notice the black hole", func() bool { return !a.Status().Connected })
	testwait.For(t, 15*time.Second, "a reconnect attempt into the black hole", func() bool { return proxy.Stats().Accepted > accepted })
	proxy.SetBlackHole(false) // connections caught in it time out on their own
	progress("after black hole")

	// 5. Refused connections.
	proxy.SetRefuse(true)
	proxy.Drop()
	accepted = proxy.Stats().Accepted
	testwait.For(t, 15*time.Second, "reconnect attempts while refused", func() bool { return proxy.Stats().Accepted >= accepted+2 })
	proxy.SetRefuse(false)
	progress("after refusals")

	// Every booking gets its reserve acknowledged: confirmed, then ready.
	for _, b := range bookings {
		testwait.For(t, 30*time.Second, "booking "+b.ID+" ready", func() bool {
			got, err := s.b.Booking(b.UserID, b.ID)
			return err == nil && got.Status == wire.BookingStatusReady
		})
	}
	// Collect one through a cut link: unlock runs once, the rider takes
	// the battery, the booking is collected.
	col := bookings[0]
	proxy.CutNext(1)
	if _, err := s.b.Collect(ctx, col.UserID, col.ID); err != nil {
		t.Fatalf("collect: %v", err)
	}
	testwait.For(t, 30*time.Second, "booking collected", func() bool {
		got, err := s.b.Booking(col.UserID, col.ID)
		return err == nil && got.Status == wire.BookingStatusCollected
	})
	progress("after collect")

	// Quiesce: drain the agent's outbox, then check the record.
	testwait.For(t, 30*time.Second, "the outbox to drain", func() bool {
		st := a.Status()
		max, _ := s.rec.seqs(a.BootID())
		return st.Connected && st.OutboxDepth == 0 && max >= st.LastSeqQueued
	})
	st := a.Status()
	max, missing := s.rec.seqs(a.BootID())
	if len(missing) > 0 {
		t.Errorf("telemetry of boot %s lost: seqs %v never accepted", a.BootID(), missing)
	}
	if max < st.LastSeqQueued {
		t.Errorf("server accepted up to seq %d, the agent queued %d", max, st.LastSeqQueued)
	}
	s.rec.mu.Lock()
	redel, diff := s.rec.redel, s.rec.diff
	s.rec.mu.Unlock()
	if len(diff) > 0 {
		t.Errorf("redelivered telemetry with different content (boots %v)", diff)
	}
	for _, b := range bookings {
		r, u := drv.counts(b.Slot)
		wantU := 0
		if b.ID == col.ID {
			wantU = 1
		}
		if r != 1 || u != wantU {
			t.Errorf("booking %s slot %d: reserve ran %d times, unlock %d times; want 1 and %d", b.ID, b.Slot, r, u, wantU)
		}
	}
	ps := proxy.Stats()
	t.Logf("network faults: %d connections, %d dropped, %d cut; %d telemetry seqs accepted, %d redelivered (no effect), 0 lost; %d agent connects; %d bookings, each reserve executed once",
		ps.Accepted, ps.Dropped, ps.Cuts, max, redel, st.Connects, len(bookings))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
