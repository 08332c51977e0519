package server

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/wire"
)

// demoRiders is how many simulated riders book and collect batteries in the
// demo, besides the demo user (who is left to the person at the dashboard).
const demoRiders = 12

// demoRiderID names simulated rider i (0-based).
func demoRiderID(i int) string { return fmt.Sprintf("demo-sim-rider-%02d", i+1) }

// demoArrival is the mean simulated time between two riders coming to one
// station to book a battery. It equals the sim's mean time between returns
// (sim.Config.ReturnEvery in StartDemo), so batteries leave the stations as
// fast as they come back: a station that fills up gets no more returns
// (they need an empty slot) and one that runs dry gets no more bookings,
// so the network never settles into "everything full and charged".
const demoArrival = 20 * time.Minute

// runRiders plays the demo's riders until ctx is done: each tick, at each
// station, a rider arrives with the probability that gives one arrival per
// demoArrival of simulated time; a free rider books there and, once the
// battery is ready, mostly collects it (the sim's rider then takes it out of
// the cabinet), sometimes cancels, and now and then walks away and lets the
// booking expire. Every rider runs on a goroutine owned by the demo's wait
// group.
func (d *Demo) runRiders(ctx context.Context, riders []string, speed int) {
	const tick = 200 * time.Millisecond
	p := float64(tick) * float64(speed) / float64(demoArrival)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 42))
	var mu sync.Mutex
	busy := make([]bool, len(riders))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, s := range d.stations {
			if rng.Float64() >= p {
				continue
			}
			mu.Lock()
			free := -1
			for _, i := range rng.Perm(len(riders)) {
				if !busy[i] {
					free = i
					break
				}
			}
			if free >= 0 {
				busy[free] = true
			}
			mu.Unlock()
			if free < 0 {
				break
			}
			roll := rng.Float64()
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer func() { mu.Lock(); busy[free] = false; mu.Unlock() }()
				d.ride(ctx, riders[free], s.ID, roll, speed)
			}()
		}
	}
}

// ride is one visit of rider uid: book at sid, wait for the battery to be
// ready, then collect (roll < 0.85), cancel (< 0.95) or walk away, and wait
// for the booking to end. Errors end the visit quietly: a station with
// nothing to book is part of the show. Riders call the bridge directly, as
// the HTTP API would: through HTTP they would share the per-address rate
// limit with the person watching the dashboard from the same machine.
func (d *Demo) ride(ctx context.Context, uid, sid string, roll float64, speed int) {
	c := demoRider{d.srv.bridge, uid}
	bk, err := c.Book(ctx, sid)
	if err != nil {
		return
	}
	// A rider walks up within a few simulated minutes of booking.
	walk := time.Duration(float64(2*time.Minute) / float64(speed) * (0.5 + roll))
	if !waitBooking(ctx, c, bk.ID, walk, func(st string) bool { return st == wire.BookingStatusReady }) {
		return
	}
	switch {
	case roll < 0.85:
		_, err = c.Collect(ctx, bk.ID)
	case roll < 0.95:
		_, err = c.Cancel(ctx, bk.ID)
	}
	if err != nil {
		return
	}
	// Wait for the booking to end (collected, cancelled, expired) so that a
	// rider holds one booking at a time.
	waitBooking(ctx, c, bk.ID, 0, func(st string) bool {
		switch st {
		case wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady:
			return false
		}
		return true
	})
}

// waitBooking polls booking id until done(status) holds, the booking can no
// longer get there, or ctx is done; it waits at least min first. It reports
// whether done held.
func waitBooking(ctx context.Context, c demoRider, id string, min time.Duration, done func(status string) bool) bool {
	deadline := time.Now().Add(min + 20*time.Minute)
	t := time.NewTimer(min)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		b, err := c.Booking(id)
		if err == nil && done(b.Status) {
			return true
		}
		if err == nil {
			switch b.Status {
			case wire.BookingStatusCollected, wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed:
				return false
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		t.Reset(250 * time.Millisecond)
	}
}

// demoRider is one simulated rider's view of the bridge.
type demoRider struct {
	b   *bridge.Bridge
	uid string
}

func (r demoRider) Book(ctx context.Context, sid string) (wire.Booking, error) {
	return r.b.Book(ctx, r.uid, sid)
}

func (r demoRider) Booking(id string) (wire.Booking, error) { return r.b.Booking(r.uid, id) }

func (r demoRider) Collect(ctx context.Context, id string) (wire.Booking, error) {
	return r.b.Collect(ctx, r.uid, id)
}

func (r demoRider) Cancel(ctx context.Context, id string) (wire.Booking, error) {
	return r.b.Cancel(ctx, r.uid, id)
}
