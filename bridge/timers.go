package bridge

import (
	"context"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/wire"
)

// ticker runs the timers every TickInterval.
func (b *Bridge) ticker() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.TickInterval)
	defer t.Stop()
	lastPurge := b.cfg.Clock()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			now := b.cfg.Clock()
			b.tick(now)
			if now.Sub(lastPurge) >= time.Hour {
				lastPurge = now
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if err := b.purgeCommands(ctx, now); err != nil {
					b.lg.Warn("bridge: purge commands", "err", err)
				}
				cancel()
			}
		}
	}
}

// tick applies the clock to every station: liveness, booking expiry and
// offline failure, command retries and command timeouts. Every station's
// commit is queued first, then they are waited for together (one group
// commit, not one fsync per station).
//
// A station with no timer due and no command in flight is skipped without
// copying its state (most stations, most seconds). The first tick after
// Start looks at every station, so that a changed domain setting (a
// threshold) is published once even for stations that stay quiet.
func (b *Bridge) tick(now time.Time) {
	offlineAfter := 3 * b.cfg.SnapshotInterval
	all := !b.tickedOnce.Swap(true)
	// Answered on the log's goroutine: counted down, never blocking it.
	var pending atomic.Int64
	pending.Store(1)
	answered := make(chan struct{})
	finish := func() {
		if pending.Add(-1) == 0 {
			close(answered)
		}
	}
	for _, s := range b.allStations() {
		if b.closed() {
			break
		}
		b.lockStation(s)
		if !all && len(s.cmds) == 0 && !s.reconnected.Load() && !s.budget.invHeld && !b.m.timersDue(&s.st, now, offlineAfter, b.cfg.OfflineFail) {
			s.mu.Unlock()
			continue
		}
		sid := s.info.ID
		pending.Add(1)
		b.tickStation(s, now, func(err error) {
			if err != nil {
				b.lg.Warn("bridge: timers", "station", sid, "err", err)
			}
			finish()
		})
		s.mu.Unlock()
	}
	finish()
	select {
	case <-answered:
	case <-b.done:
	}
}

// tickStation applies the clock to s (whose mu the caller holds) and queues
// the commit; done gets its outcome.
func (b *Bridge) tickStation(s *station, now time.Time, done func(error)) {
	next, eff := b.m.timers(&s.st, now, 3*b.cfg.SnapshotInterval, b.cfg.OfflineFail)
	b.shape(s, &next, &eff, now) // publishes a held-back inventory_update
	if s.budget.invHeld && next.Inv == b.m.inventory(&next) {
		s.budget.invHeld = false // published meanwhile (by a booking, say)
	}
	c := &change{next: next, eff: eff}
	// Commands: time out or resend.
	if s.reconnected.Swap(false) {
		for _, r := range s.cmds {
			r.NextAt = now
		}
	}
	ids := make([]string, 0, len(s.cmds))
	for id := range s.cmds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var resend []sendReq
	for _, id := range ids {
		r := s.cmds[id]
		if now.Before(r.NextAt) {
			continue
		}
		if !now.Before(r.Deadline) {
			upd, err := r.to(cmdFailed, "no acknowledgement before the deadline")
			if err != nil {
				continue
			}
			c.cmdUpdates = append(c.cmdUpdates, upd)
			b.commandFailed(c, upd, false, now)
			continue
		}
		p, err := r.payload()
		if err != nil {
			continue
		}
		r.resent(now, b.backoff)
		resend = append(resend, sendReq{sid: s.info.ID, cmdID: r.Cmd.ID, payload: p})
	}
	if !c.eff.empty() || len(c.cmdUpdates) > 0 || c.next.Online != s.st.Online {
		b.commit(s, c, now, done)
	} else {
		s.afterQueued(func(error) { done(nil) })
	}
	// Resent once what they are on record by is durable.
	b.sendAfter(s, resend)
}

func (b *Bridge) backoff(attempts int) time.Duration {
	d := b.cfg.CommandRetry
	for i := 1; i < attempts && d < b.cfg.CommandRetryMax; i++ {
		d *= 2
	}
	return min(d, b.cfg.CommandRetryMax)
}

// commandFailed adds the consequences of a failed command (refused or timed
// out) to c: a reserve fails its booking; an unlock tells the user.
func (b *Bridge) commandFailed(c *change, r *command, refused bool, now time.Time) {
	switch r.Cmd.Action {
	case wire.ActionReserve:
		var eff effects
		if refused {
			c.next, eff = b.m.reserveAcked(&c.next, r.Cmd.BookingID, false, r.Error, now)
		} else {
			c.next, eff = b.m.reserveTimedOut(&c.next, r.Cmd.BookingID, now)
		}
		c.eff.merge(eff)
	case wire.ActionUnlock:
		i := findRes(&c.next, r.Cmd.BookingID)
		if i < 0 {
			return
		}
		res := c.next.Slots[i].Res
		msg := "the station could not unlock the slot; try collecting again"
		c.eff.event(wire.TypeNotification, res.UserID, wire.Notification{Title: "Unlock failed", Message: msg, Level: wire.LevelError, BookingID: res.BookingID})
	default:
		b.lg.Warn("bridge: command failed", "station", r.StationID, "id", r.Cmd.ID, "action", r.Cmd.Action, "err", r.Error)
	}
}

func (e *effects) merge(o effects) {
	e.Events = append(e.Events, o.Events...)
	e.Bookings = append(e.Bookings, o.Bookings...)
	e.Commands = append(e.Commands, o.Commands...)
	e.Snapshot = e.Snapshot || o.Snapshot
}

// purgeCommands deletes settled (acked or failed) command records older
// than CommandKeep, and records that cannot be decoded or belong to no
// station, in one commit of no station: a settled record is final, no
// station commit writes it again. Pending records are never touched.
func (b *Bridge) purgeCommands(ctx context.Context, now time.Time) error {
	var purge []commitlog.Record
	err := b.log.Records(commitlog.KindCommand, "", func(key string, value []byte) bool {
		c, err := decodeCommand(value)
		if err != nil {
			purge = append(purge, commitlog.Record{Kind: commitlog.KindCommand, Key: key})
			return true
		}
		b.mu.RLock()
		known := b.stations[c.StationID] != nil
		b.mu.RUnlock()
		if !known || (!c.pending() && now.Sub(c.Created) > b.cfg.CommandKeep) {
			purge = append(purge, commitlog.Record{Kind: commitlog.KindCommand, Key: key})
		}
		return true
	})
	if err != nil || len(purge) == 0 {
		return err
	}
	ch := make(chan error, 1)
	if err := b.log.Append(&commitlog.Commit{Records: purge}, func(err error) { ch <- err }); err != nil {
		return fmt.Errorf("bridge: purge old commands: %w", err)
	}
	if err := wait(ctx, ch); err != nil {
		return fmt.Errorf("bridge: purge old commands: %w", err)
	}
	return nil
}
