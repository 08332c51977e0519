package bridge

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/swapbridge/swapbridge/wire"
)

// Bookings.
//
// A booking is stored (commitlog.KindBooking, key = its id, the
// wire.Booking as JSON; indexed by commitlog.KindUserBooking "uid/id") in
// the commit that creates it, and rewritten by every commit that changes
// it. Its station keeps it in memory while it is active. Its states:
//
//	pending ──▶ confirmed ──▶ ready ──▶ collected
//	   │            │           │
//	   ╰────────────┴───────────┴──▶ cancelled | expired | failed
//
// pending, confirmed and ready are active (they hold a battery: the slot's
// reservation mirrors them); the others are final. The station state
// machine (state.go) decides the transitions and reports them as
// bookingChanges; booking.apply refuses any the diagram does not allow.

// errBookingTransition: a change the booking's status does not allow.
var errBookingTransition = errors.New("bridge: booking transition not allowed")

// bookingTransitions lists, per status, the statuses it may change to.
var bookingTransitions = map[string][]string{
	wire.BookingStatusPending:   {wire.BookingStatusConfirmed, wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed},
	wire.BookingStatusConfirmed: {wire.BookingStatusReady, wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed},
	wire.BookingStatusReady:     {wire.BookingStatusCollected, wire.BookingStatusCancelled, wire.BookingStatusExpired, wire.BookingStatusFailed},
}

// booking is a booking record and its lifecycle.
type booking struct {
	wire.Booking
}

// activeStatus reports whether a booking with the status holds a battery.
func activeStatus(status string) bool {
	switch status {
	case wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady:
		return true
	}
	return false
}

func (bk *booking) active() bool { return activeStatus(bk.Status) }

// apply returns the booking after c, or errBookingTransition if its
// status does not allow c.Status.
func (bk *booking) apply(c bookingChange) (*booking, error) {
	allowed := false
	for _, s := range bookingTransitions[bk.Status] {
		allowed = allowed || s == c.Status
	}
	if !allowed {
		return nil, fmt.Errorf("%w: booking %s %s → %s", errBookingTransition, bk.ID, bk.Status, c.Status)
	}
	n := *bk
	n.Status = c.Status
	if c.Reason != "" {
		n.Reason = c.Reason
	}
	if !c.ExpiresAt.IsZero() {
		n.ExpiresAt = c.ExpiresAt.UTC()
	}
	return &n, nil
}

func (bk *booking) encode() ([]byte, error) { return json.Marshal(&bk.Booking) }

func decodeBooking(raw []byte) (*booking, error) {
	var bk booking
	if err := json.Unmarshal(raw, &bk.Booking); err != nil {
		return nil, err
	}
	return &bk, nil
}
