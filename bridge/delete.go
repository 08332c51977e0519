package bridge

import (
	"context"
	"errors"
	"fmt"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/wire"
)

// DeleteStation takes a station out of service for good. In one commit its
// active bookings fail (each user gets a notification), its state record
// and command records are deleted, and the station leaves the catalogue
// with its credentials (commitlog.Commit.RemoveStation); then it leaves
// every view (StationView and StationExists answer ErrStationNotFound /
// false). Its past events stay in the log. No command is sent to it any
// more: closing its MQTT session is the caller's part (broker.Revoke).
// ErrStationNotFound for an unknown station. Blocks for one commit, with
// the station locked.
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
	// Every command record of the station is on the log once its queued
	// commits are answered.
	s.drain()
	if s.broken.Load() {
		b.reload(s)
	}
	var cmds []string
	err = b.log.Records(commitlog.KindCommand, "", func(key string, value []byte) bool {
		if c, err := decodeCommand(value); err == nil && c.StationID == sid {
			cmds = append(cmds, key)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("bridge: delete station %s: %w", sid, err)
	}
	now := b.cfg.Clock()
	next := s.st.clone()
	var eff effects
	for i := range next.Slots {
		b.m.fail(&next, i, "the station was taken out of service", &eff)
	}
	// Only the users' notifications: no release to a station that is
	// gone, and no more events on its channel.
	c := &change{next: next, eff: effects{Bookings: eff.Bookings}, remove: true, removeCmds: cmds}
	for _, ev := range eff.Events {
		if ev.UserID != "" {
			c.eff.Events = append(c.eff.Events, ev)
		}
	}
	ch := make(chan error, 1)
	b.commit(s, c, now, func(err error) { ch <- err })
	s.removed.Store(true)
	// The station stays locked: nothing is queued after its removal.
	if err := <-ch; err != nil {
		s.removed.Store(false)
		if errors.Is(err, commitlog.ErrNotFound) {
			return fmt.Errorf("%w: %s", ErrStationNotFound, sid)
		}
		return err
	}
	b.mu.Lock()
	if b.stations[sid] == s {
		delete(b.stations, sid)
	}
	b.mu.Unlock()
	b.lg.Info("station deleted", "station", sid, "bookings_failed", len(c.eff.Bookings))
	return nil
}

// CancelUserBookings cancels every active booking (pending, confirmed or
// ready) of the user through Cancel, so each slot is released as if the
// user had asked, and returns how many it cancelled. A booking that ended
// meanwhile is skipped. Blocks for one commit per booking.
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
