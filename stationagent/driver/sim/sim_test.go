package sim

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// fakeClock is a manual clock for the simulation.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *fakeClock               { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func read(t *testing.T, d *Driver) []wire.Slot {
	t.Helper()
	s, err := d.ReadSlots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDeterministicWithSeed(t *testing.T) {
	cfg := Config{Slots: 8, Seed: 42, FaultRate: 2, ReturnEvery: 5 * time.Minute}
	run := func(seed uint64) [][]wire.Slot {
		cfg.Seed = seed
		c := newClock()
		d, err := New(cfg, c.now)
		if err != nil {
			t.Fatal(err)
		}
		var out [][]wire.Slot
		for i := 0; i < 30; i++ {
			c.add(2 * time.Minute)
			if i == 3 {
				d.Unlock(context.Background(), 2)
			}
			out = append(out, read(t, d))
		}
		return out
	}
	a, b := run(42), run(42)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same seed, same clock: different simulations")
	}
	if reflect.DeepEqual(a, run(43)) {
		t.Fatal("different seeds gave the same simulation")
	}
}

func TestChargingCurveAndTemperature(t *testing.T) {
	c := newClock()
	d, err := New(Config{Slots: 1, Occupied: 1, Seed: 1, ReturnEvery: -1}, c.now)
	if err != nil {
		t.Fatal(err)
	}
	d.slots[0].soc = 10
	d.slots[0].temp = 25
	s0 := read(t, d)[0]
	c.add(10 * time.Minute)
	s1 := read(t, d)[0]
	if !s1.Charging || s1.SoC <= s0.SoC {
		t.Fatalf("not charging: %+v → %+v", s0, s1)
	}
	if s1.TempC <= s0.TempC {
		t.Errorf("temperature did not follow the charge current: %.1f → %.1f", s0.TempC, s1.TempC)
	}
	lowRate := s1.SoC - s0.SoC
	d.slots[0].soc = 95
	s2 := read(t, d)[0]
	c.add(10 * time.Minute)
	s3 := read(t, d)[0]
	if highRate := s3.SoC - s2.SoC; highRate >= lowRate/2 {
		t.Errorf("charging near full (%.2f/10min) not slower than at 10%% (%.2f/10min)", highRate, lowRate)
	}
	c.add(10 * time.Hour)
	s4 := read(t, d)[0]
	if s4.SoC != 100 || s4.Charging {
		t.Errorf("after 10h: %+v, want full and not charging", s4)
	}
	if s4.TempC > 26 {
		t.Errorf("idle battery at %.1f °C, want near ambient", s4.TempC)
	}
	if err := s4.Validate(1); err != nil {
		t.Error(err)
	}
}

func TestRiderTakesAndReturns(t *testing.T) {
	c := newClock()
	d, err := New(Config{Slots: 2, Occupied: 2, Seed: 3, ReturnEvery: time.Minute, TakeAfter: 10 * time.Second}, c.now)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := d.Unlock(ctx, 1); err != nil {
		t.Fatal(err)
	}
	s := read(t, d)[0]
	if s.Door != wire.DoorOpen || s.Locked || !s.Occupied() {
		t.Fatalf("after unlock: %+v", s)
	}
	c.add(11 * time.Second)
	s = read(t, d)[0]
	if s.Door != wire.DoorClosed || !s.Locked || s.Occupied() {
		t.Fatalf("after the rider: %+v, want empty, closed, locked", s)
	}
	// Within an hour (mean one per minute) a rider brings a battery back.
	for i := 0; i < 60 && !s.Occupied(); i++ {
		c.add(time.Minute)
		s = read(t, d)[0]
	}
	if !s.Occupied() || s.SoC > 60 || !s.Locked {
		t.Fatalf("no (low SoC) battery returned into the empty slot: %+v", s)
	}
	if err := d.Unlock(ctx, 9); err == nil {
		t.Error("unlock of slot 9 of 2 accepted")
	}
}

func TestFaultsWhenConfigured(t *testing.T) {
	c := newClock()
	d, err := New(Config{Slots: 4, Occupied: 4, Seed: 5, FaultRate: 6, FaultDuration: time.Minute, ReturnEvery: -1}, c.now)
	if err != nil {
		t.Fatal(err)
	}
	faults := 0
	for i := 0; i < 60; i++ {
		c.add(time.Minute)
		for _, s := range read(t, d) {
			if s.Fault != "" {
				faults++
				if s.Charging {
					t.Errorf("faulted slot charging: %+v", s)
				}
			}
		}
	}
	if faults == 0 {
		t.Error("no fault in an hour at 6 faults/slot/hour")
	}
	quiet, _ := New(Config{Slots: 4, Seed: 5, ReturnEvery: -1}, c.now)
	c.add(10 * time.Hour)
	for _, s := range read(t, quiet) {
		if s.Fault != "" {
			t.Errorf("fault without fault_rate: %+v", s)
		}
	}
}

func TestSpeedMultiplier(t *testing.T) {
	c := newClock()
	slow, _ := New(Config{Slots: 1, Occupied: 1, Seed: 9, ReturnEvery: -1}, c.now)
	fast, _ := New(Config{Slots: 1, Occupied: 1, Seed: 9, ReturnEvery: -1, Speed: 60}, c.now)
	slow.slots[0].soc, fast.slots[0].soc = 10, 10
	c.add(time.Minute)
	if s, f := read(t, slow)[0].SoC, read(t, fast)[0].SoC; f-10 < 30*(s-10) {
		t.Errorf("speed 60: soc %.2f vs %.2f at speed 1", f, s)
	}
}
