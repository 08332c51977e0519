package reliability

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// pubState is what one station publisher knows: which seqs got a PUBACK.
type pubState struct {
	mu    sync.Mutex
	acked map[uint64]bool
	next  uint64 // the next seq to (re)send
}

// TestCrashUnderTelemetryLoad SIGKILLs swapd while several stations publish
// QoS 1 telemetry, restarts it on the same data dir, lets the stations
// resend what was not acknowledged and go on, and checks that every
// acknowledged message has its effect in the event log exactly once and
// that the bbolt file is consistent.
func TestCrashUnderTelemetryLoad(t *testing.T) {
	const (
		stations  = 4
		slots     = 8
		killAfter = 1000 // acknowledged messages before the kill
		after     = 20   // messages per station after the restart
	)
	dir := t.TempDir()
	p := startSwapd(t, dir)
	ids := make([]string, stations)
	for i := range ids {
		ids[i] = fmt.Sprintf("CR-%d", i+1)
	}
	secrets := provision(t, p.admin(), slots, ids...)
	states := map[string]*pubState{}
	for _, id := range ids {
		states[id] = &pubState{acked: map[uint64]bool{}, next: 1}
	}
	boot := func(sid string) string { return "boot-" + sid }

	// run publishes seqs from st.next until stop is closed or the
	// connection fails; it returns after the first failure.
	var total atomic.Int64
	run := func(addr, sid string, limit uint64, stop <-chan struct{}) error {
		s, err := dialStation(addr, sid, secrets[sid], nil)
		if err != nil {
			return err
		}
		defer s.close()
		st := states[sid]
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			st.mu.Lock()
			seq := st.next
			st.mu.Unlock()
			if limit > 0 && seq > limit {
				return nil
			}
			if err := s.publish(wire.KindTelemetry, telemetryFor(sid, boot(sid), seq, slots), false); err != nil {
				return err
			}
			st.mu.Lock()
			st.acked[seq] = true
			st.next = seq + 1
			st.mu.Unlock()
			total.Add(1)
		}
	}

	// Phase 1: load, then SIGKILL in the middle of it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { _ = run(p.mqtt, id, 0, stop) })
	}
	waitUntil(t, 60*time.Second, "acknowledged telemetry before the kill", func() bool { return total.Load() >= killAfter })
	p.kill()
	close(stop)
	wg.Wait()
	ackedBefore := total.Load()

	checkDB(t, filepath.Join(dir, "swapd.db"))

	// Phase 2: restart on the same data; each station resends from its
	// first unacknowledged seq (same bytes) and publishes a few more.
	p2 := startSwapd(t, dir)
	errs := make(chan error, stations)
	for _, id := range ids {
		st := states[id]
		st.mu.Lock()
		limit := st.next + after
		st.mu.Unlock()
		wg.Go(func() { errs <- run(p2.mqtt, id, limit, nil) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publishing after the restart: %v", err)
		}
	}
	p2.stop(t)

	// Every acknowledged message has its battery_added, exactly once;
	// nothing appears twice.
	frames := checkDB(t, filepath.Join(dir, "swapd.db"))
	added := map[string]int{}
	for _, f := range frames {
		if f.Type == wire.TypeBatteryAdded {
			added[f.BatteryID]++
		}
	}
	var acked, missing, dups int
	for _, id := range ids {
		st := states[id]
		for seq := range st.acked {
			acked++
			if seq == 1 {
				continue // the first report sets the slots without battery_added
			}
			switch n := added[batteryFor(id, seq)]; {
			case n == 0:
				missing++
				t.Errorf("%s seq %d was acknowledged but its battery_added is not in the log", id, seq)
			case n > 1:
				dups++
				t.Errorf("%s seq %d: battery_added %d times", id, seq, n)
			}
		}
	}
	for b, n := range added {
		if n > 1 && dups == 0 {
			t.Errorf("battery %s added %d times", b, n)
		}
	}
	t.Logf("crash under load: %d stations, %d acknowledged before SIGKILL, %d acknowledged in all, %d effects missing, %d duplicated, %d events in the log",
		stations, ackedBefore, acked, missing, dups, len(frames))
}
