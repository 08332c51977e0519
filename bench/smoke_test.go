package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestSmoke is the CI smoke scenario: steady, rush and storm for a few
// seconds at low rates against an in-process swapd. It fails only on errors
// or on delivered < expected, never on timing.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds-long end-to-end run")
	}
	cfg := Defaults(Smoke)
	cfg.Embedded = true
	cfg.Duration = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	rep.Print(&sb)
	if !rep.OK() {
		t.Fatalf("smoke failed:\n%s", sb.String())
	}
	if len(rep.Parts) != 3 {
		t.Fatalf("want steady, rush and storm parts, got %d", len(rep.Parts))
	}
	steady, rush, storm := rep.Parts[0], rep.Parts[1], rep.Parts[2]
	s := steady.Steps[0]
	if s.Acked == 0 || s.Expected == 0 || s.Delivered != s.Expected || s.Latency.Count != s.Delivered {
		t.Errorf("steady: acked %d, delivered %d / expected %d, latencies %d\n%s", s.Acked, s.Delivered, s.Expected, s.Latency.Count, sb.String())
	}
	// One all-stations socket sees every step, the per-station ones theirs.
	if s.Expected < s.Acked {
		t.Errorf("steady: expected %d frames < %d acked steps", s.Expected, s.Acked)
	}
	if b := rush.Rush; b == nil || b.Created == 0 || b.Confirmed != b.Created || b.Ready != b.Created || b.Cancelled != b.Created {
		t.Errorf("rush: %+v", rush.Rush)
	}
	if rush.Commands["reserve"] == 0 || rush.Commands["release"] == 0 {
		t.Errorf("rush: stations acknowledged %v", rush.Commands)
	}
	if st := storm.Storm; st == nil || st.Reconnected != st.Stations || st.HTTP.Count == 0 {
		t.Errorf("storm: %+v", storm.Storm)
	}
}

// TestBaselineSteady runs the steady scenario against the bare broker.
func TestBaselineSteady(t *testing.T) {
	if testing.Short() {
		t.Skip("seconds-long end-to-end run")
	}
	cfg := Defaults(Steady)
	cfg.Baseline, cfg.Stations, cfg.Rate, cfg.Duration = true, 10, 200, time.Second
	rep, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Steps[0]
	if !rep.OK() || s.Acked < 100 || s.Delivered != s.Expected || s.Expected != s.Acked {
		t.Fatalf("baseline: ok %v, %+v, errors %v", rep.OK(), s, rep.ErrorSamples)
	}
	if rep.Server == nil || rep.Server.PeakRSSKB == 0 {
		t.Errorf("baseline reads its own process: %+v", rep.Server)
	}
}

// TestMatchCountsDeliveredLostAndUnmatched feeds frames to a socket's
// matcher directly.
func TestMatchCountsDeliveredLostAndUnmatched(t *testing.T) {
	r := newRunner(Defaults(Steady), &target{}, "m")
	st := &station{idx: 0, id: "m-s0", toggle: 3, run: r}
	r.stations = []*station{st}
	r.byID[st.id] = st
	c := &wsClient{run: r, kind: wsStation, st: st, cursors: make([]uint64, 1)}
	now := time.Now()
	for s := uint64(1); s <= 10; s++ {
		st.ring[s%stepRing].Store(now.Add(-time.Duration(s) * time.Millisecond).UnixNano())
	}
	st.step.Store(10)
	frame := func(avail int) []byte {
		return []byte(fmt.Sprintf(`{"type":"inventory_update","seq":9,"ts":"2026-01-01T00:00:00Z","station_id":"m-s0","available_batteries":%d,"booked_batteries":0}`, avail))
	}
	// Steps 1..10 give 1,2,3,2,1,0,1,2,3,2. Deliver 1, 2, skip step 3
	// (lost), then 2 (step 4), 1 (step 5).
	for _, a := range []int{1, 2, 2, 1} {
		c.handle(frame(a), now)
	}
	if c.delivered.Load() != 4 || c.lost.Load() != 1 || c.unmatched.Load() != 0 || c.cursors[0] != 5 {
		t.Fatalf("delivered %d lost %d unmatched %d cursor %d", c.delivered.Load(), c.lost.Load(), c.unmatched.Load(), c.cursors[0])
	}
	c.handle(frame(7), now) // no step gives 7
	c.handle([]byte(`{"type":"inventory_update","seq":1,"ts":"x","station_id":"other","available_batteries":1}`), now)
	c.handle([]byte(`{"type":"inventory_update","seq":1,"ts":"x","station_id":"m-s0","available_batteries":1,"snapshot":true}`), now)
	c.handle([]byte(`garbage`), now)
	c.handle([]byte(`{"type":"inventory_update","station_id":"m-s0"}`), now)
	if c.unmatched.Load() != 3 || c.delivered.Load() != 4 {
		t.Fatalf("unmatched %d (want 3), delivered %d", c.unmatched.Load(), c.delivered.Load())
	}
	if r.latency().Count() != 4 {
		t.Fatalf("latencies recorded: %d", r.latency().Count())
	}
	if r.errs.Load() != 0 {
		t.Fatalf("errors: %v", r.errSamples)
	}
}
