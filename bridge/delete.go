package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// DeleteStation takes a station out of service for good. In one commit its
// active bookings fail (each user gets a notification), its state record
// and command records are deleted, and the store forgets the station and
// its credentials (store.Tx.DeleteStation); then it leaves every view
// (StationView and StationExists answer ErrStationNotFound / false). Its
// past events stay in the log. No command is sent to it any more: closing
// its MQTT session is the caller's part (broker.Revoke). ErrStationNotFound
// for an unknown station. Blocks for one store commit.
func (b *Bridge) DeleteStation(ctx context.Context, sid string) error {
	s, err := b.station(sid)
	if err != nil {
		return err
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	if s.removed.Load() {
		return fmt.Errorf("%w: %s", ErrStationNotFound, sid)
	}
	if b.closed() {
		return ErrClosed
	}
	now := b.cfg.Clock()
	next := s.st.clone()
	var eff effects
	for i := range next.Slots {
		b.m.fail(&next, i, "the station was taken out of service", &eff)
	}
	// Only the users' notifications: no release to a station that is
	// gone, and no more events on its channel.
	c := &change{next: next, eff: effects{Bookings: eff.Bookings}}
	for _, ev := range eff.Events {
		if ev.UserID != "" {
			c.eff.Events = append(c.eff.Events, ev)
		}
	}
	c.extra = func(tx *store.Tx) error {
		// Runs after the commit's own writes: the state and the command
		// records settled by the failed bookings go too.
		var cmds []string
		err := tx.Scan(store.KindCommand, "", func(key string, value []byte) bool {
			cmds = append(cmds, key)
			return true
		})
		if err != nil {
			return err
		}
		for _, id := range cmds {
			raw, err := tx.Get(store.KindCommand, id)
			if err != nil {
				return err
			}
			if !commandOf(raw, sid) {
				continue
			}
			if err := tx.Delete(store.KindCommand, id); err != nil {
				return err
			}
		}
		if err := tx.Delete(store.KindStationState, sid); err != nil {
			return err
		}
		return tx.DeleteStation(sid)
	}
	if err := b.commit(ctx, s, c, now); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrStationNotFound, sid)
		}
		return err
	}
	s.removed.Store(true)
	b.mu.Lock()
	if b.stations[sid] == s {
		delete(b.stations, sid)
	}
	b.mu.Unlock()
	b.log.Info("station deleted", "station", sid, "bookings_failed", len(c.eff.Bookings))
	return nil
}

// commandOf reports whether the command record raw belongs to station sid.
func commandOf(raw []byte, sid string) bool {
	var c commandRec
	return json.Unmarshal(raw, &c) == nil && c.StationID == sid
}

// CancelUserBookings cancels every active booking (pending, confirmed or
// ready) of the user through Cancel, so each slot is released as if the
// user had asked, and returns how many it cancelled. A booking that ended
// meanwhile is skipped. Blocks for one store commit per booking.
func (b *Bridge) CancelUserBookings(ctx context.Context, userID string) (int, error) {
	bks, err := b.UserBookings(userID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, bk := range bks {
		switch bk.Status {
		case wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady:
		default:
			continue
		}
		_, err := b.Cancel(ctx, userID, bk.ID)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrBookingState), errors.Is(err, ErrStationNotFound), errors.Is(err, ErrBookingNotFound):
		default:
			return n, fmt.Errorf("bridge: cancel bookings of %s: %w", userID, err)
		}
	}
	return n, nil
}
