package bridge

import (
	"errors"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// The booking state machine: every (from, to) pair, allowed or refused.
func TestBookingTransitions(t *testing.T) {
	all := []string{
		wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady,
		wire.BookingStatusCollected, wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed,
	}
	ends := []string{wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed}
	allowed := map[[2]string]bool{
		{wire.BookingStatusPending, wire.BookingStatusConfirmed}: true,
		{wire.BookingStatusConfirmed, wire.BookingStatusReady}:   true,
		{wire.BookingStatusReady, wire.BookingStatusCollected}:   true,
	}
	for _, from := range []string{wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady} {
		for _, to := range ends {
			allowed[[2]string{from, to}] = true
		}
	}
	exp := time.Date(2026, 12, 4, 10, 15, 0, 0, time.UTC)
	for _, from := range all {
		for _, to := range all {
			t.Run(from+"→"+to, func(t *testing.T) {
				bk := &booking{wire.Booking{ID: "bk1", Status: from, Reason: "old"}}
				got, err := bk.apply(bookingChange{ID: "bk1", Status: to, Reason: "new", ExpiresAt: exp})
				if !allowed[[2]string{from, to}] {
					if !errors.Is(err, errBookingTransition) || got != nil {
						t.Fatalf("refused transition gave %+v, %v", got, err)
					}
					return
				}
				if err != nil || got.Status != to || got.Reason != "new" || !got.ExpiresAt.Equal(exp) {
					t.Fatalf("allowed transition: %+v, %v", got, err)
				}
				if bk.Status != from {
					t.Fatal("apply changed the booking it was called on")
				}
				if got.active() != activeStatus(to) || activeStatus(to) != (to == wire.BookingStatusConfirmed || to == wire.BookingStatusReady) {
					t.Fatalf("active() = %v in %s", got.active(), to)
				}
			})
		}
	}
}

// The state machine (state.go) only ever asks for allowed transitions:
// a booking's whole life through the machine, applied to its record.
func TestMachineBookingChangesAreAllowed(t *testing.T) {
	m := testMachine()
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	st := online4(t, m)
	i := m.pick(&st)
	st, eff := m.book(&st, i, "bk1", "u1", now)
	bk := &booking{wire.Booking{ID: "bk1", Status: wire.BookingStatusPending}}
	apply := func(eff effects) {
		t.Helper()
		for _, c := range eff.Bookings {
			next, err := bk.apply(c)
			if err != nil {
				t.Fatal(err)
			}
			bk = next
		}
	}
	apply(eff)
	st, eff = m.reserveAcked(&st, "bk1", true, "", now)
	apply(eff)
	if bk.Status != wire.BookingStatusReady {
		t.Fatalf("after the ack: %s, want ready (a ready battery)", bk.Status)
	}
	st, eff, ok := m.collect(&st, "bk1", now)
	if !ok {
		t.Fatal("collect refused")
	}
	apply(eff)
	tel := telem("A", 9, false, slotOf(i+1, "", 0))
	_, eff = m.telemetry(&st, tel, now)
	apply(eff)
	if bk.Status != wire.BookingStatusCollected {
		t.Fatalf("after the battery left: %s", bk.Status)
	}
}
