package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/wire"
)

// The commit engine: the one write path of a station.
//
// Every transition of a station (a telemetry, status or ack, a booking
// request, a timer, the sender recording a delivery, a deletion) is
// decided and applied to the station's memory under its mutex, and queued
// as one commitlog.Commit on the Log: the state record, the booking and
// command records it changes, and its events. Its after-durable effects
// run from the commit's completion: the new commands go to the sender,
// booking places are settled (limits.go), and the caller's done runs
// (the broker's PUBACK, an HTTP answer). Callers that must answer
// synchronously wait for that done.
//
// The log makes a station's commits durable in the order they were queued,
// so the station's records and events reach it in the order its memory
// advanced, and readers of the memory (views, bookings) may be ahead of
// the log by the station's queued commits (milliseconds): a change derived
// from them is queued behind them. If a commit fails, the log refuses the
// station's later queued commits (they derive from the lost one), the
// station is marked broken, and the next lockStation waits for its queued
// commits to be answered and reloads the station (state, bookings and
// commands) from the log. Nothing is acknowledged that is not durable.

// errResync: the station is being reloaded after a failed commit.
var errResync = errors.New("bridge: station is being reloaded after a failed commit")

// queued is one commit of a station, from its making until it is
// answered: the commit itself, what to do once it is durable, and what
// waits for it (whatever waits for every commit queued so far waits for
// the newest one).
type queued struct {
	b      *Bridge
	s      *station
	commit commitlog.Commit
	recs   [2]commitlog.Record // backing of commit.Records for most commits
	enc    *[]byte             // the state record's buffer (stateBufPool)
	done   func(error)

	// After-durable effects.
	sends      []sendReq
	newBooking *booking
	ended      []string // bookings the commit ends

	waiters []func(error) // s.pmu
}

// settle is the commit's answer: it records it, runs the effects of a
// durable commit (or gives back a failed booking's place), then calls done
// and whatever waited. It runs on the log's goroutine (or at once if the
// log refused the commit) and never blocks.
func (q *queued) settle(err error) {
	b, s := q.b, q.s
	stateBufPool.Put(q.enc)
	waiters := s.pop(q, err)
	if err == nil {
		for _, req := range q.sends {
			b.trySend(req)
		}
		if bk := q.newBooking; bk != nil {
			b.active.committed(bk.UserID, bk.ID)
		}
		for _, id := range q.ended {
			b.active.release(id)
		}
	} else {
		if bk := q.newBooking; bk != nil {
			b.active.release(bk.ID)
		}
		err = fmt.Errorf("bridge: commit station %s: %w", s.info.ID, err)
	}
	q.done(err)
	answer(waiters, err)
}

// change is one transition of a station.
type change struct {
	next stationState
	eff  effects
	// sameState: next is the state as it was; no state record is written.
	sameState bool
	// cmdUpdates are existing commands whose state changes.
	cmdUpdates []*command
	// newBooking is the booking a Book creates.
	newBooking *booking
	// remove deletes the station (DeleteStation): its state record, the
	// command records named in removeCmds, its catalogue entry.
	remove     bool
	removeCmds []string
}

// stateBufPool holds buffers for encoded station state records (a commit
// returns its buffer once it is answered).
var stateBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// commit applies c to s, whose mu the caller holds, and queues its commit.
// done is called exactly once, with nil once the commit is durable and its
// effects ran, or with the error for which it is not; it may be called
// before commit returns, or on the log's goroutine, and must not block.
func (b *Bridge) commit(s *station, c *change, now time.Time, done func(error)) {
	sid := s.info.ID
	if s.removed.Load() {
		done(fmt.Errorf("bridge: commit station %s: %w", sid, ErrStationNotFound))
		return
	}
	b.settleCommands(s, c)
	q := &queued{b: b, s: s, enc: stateBufPool.Get().(*[]byte), done: done, newBooking: c.newBooking}
	lc := &q.commit
	*lc = commitlog.Commit{Station: sid, Reopen: s.reopen, RemoveStation: c.remove, Records: q.recs[:0]}
	fail := func(err error) {
		stateBufPool.Put(q.enc)
		done(fmt.Errorf("bridge: commit station %s: %w", sid, err))
	}
	if !c.sameState && !c.remove {
		*q.enc = appendState((*q.enc)[:0], &c.next)
		lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindStationState, Key: sid, Value: *q.enc})
	}

	// Commands: the new ones, then the updates.
	var newCmds []*command
	for _, cmd := range c.eff.Commands {
		cmd.ID = newID("c", now)
		r := newCommand(cmd, sid, now, b.cfg.CommandRetry, b.cfg.CommandTimeout)
		p, err := r.payload()
		if err != nil {
			fail(err)
			return
		}
		newCmds = append(newCmds, r)
		q.sends = append(q.sends, sendReq{sid: sid, cmdID: cmd.ID, payload: p})
	}
	for _, r := range append(newCmds, c.cmdUpdates...) {
		j, err := json.Marshal(r)
		if err != nil {
			fail(fmt.Errorf("encode command: %w", err))
			return
		}
		lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindCommand, Key: r.Cmd.ID, Value: j})
	}

	// Bookings: the new one, then the state machine's changes, in order
	// (one transition may confirm a booking and make it ready).
	var changed []*booking
	if nb := c.newBooking; nb != nil {
		changed = append(changed, nb)
		lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindUserBooking, Key: nb.UserID + "/" + nb.ID, Value: []byte{'1'}})
	}
	for _, bc := range c.eff.Bookings {
		cur := s.bookings[bc.ID]
		for _, bk := range changed {
			if bk.ID == bc.ID {
				cur = bk
			}
		}
		if cur == nil {
			b.lg.Error("bridge: change of a booking the station does not hold", "station", sid, "booking", bc.ID, "status", bc.Status)
			continue
		}
		nb, err := cur.apply(bc)
		if err != nil {
			b.lg.Error("bridge: booking change refused", "station", sid, "err", err)
			continue
		}
		replaced := false
		for i, bk := range changed {
			if bk.ID == nb.ID {
				changed[i], replaced = nb, true
			}
		}
		if !replaced {
			changed = append(changed, nb)
		}
		if !nb.active() {
			q.ended = append(q.ended, nb.ID)
		}
	}
	for _, bk := range changed {
		j, err := bk.encode()
		if err != nil {
			fail(fmt.Errorf("encode booking: %w", err))
			return
		}
		lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindBooking, Key: bk.ID, Value: j})
	}
	if c.remove {
		lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindStationState, Key: sid})
		for _, k := range c.removeCmds {
			lc.Records = append(lc.Records, commitlog.Record{Kind: commitlog.KindCommand, Key: k})
		}
	}

	var err error
	if lc.Events, err = encodeEvents(sid, now, c.eff.Events); err != nil {
		fail(err)
		return
	}

	s.push(q)
	if err := b.log.Append(lc, q.settle); err != nil {
		q.settle(err)
		return
	}
	s.reopen = false

	// Applied at once; durable in order.
	s.st = c.next
	for _, r := range c.cmdUpdates {
		if r.pending() {
			s.cmds[r.Cmd.ID] = r
		} else {
			delete(s.cmds, r.Cmd.ID)
		}
	}
	for _, r := range newCmds {
		s.cmds[r.Cmd.ID] = r
	}
	for _, bk := range changed {
		if bk.active() {
			s.bookings[bk.ID] = bk
		} else {
			delete(s.bookings, bk.ID)
		}
	}
}

// commitWait queues c like commit, releases s.mu and waits for the
// outcome (or for ctx: the commit goes on regardless).
func (b *Bridge) commitWait(ctx context.Context, s *station, c *change, now time.Time) error {
	ch := make(chan error, 1)
	b.commit(s, c, now, func(err error) { ch <- err })
	s.mu.Unlock()
	return wait(ctx, ch)
}

// push records q being appended (s.mu held).
func (s *station) push(q *queued) {
	s.pmu.Lock()
	s.inflight++
	s.tail = q
	s.pmu.Unlock()
}

// pop records the answer to q and returns what waited for it. A failure
// marks the station broken first.
func (s *station) pop(q *queued, err error) []func(error) {
	if err != nil {
		s.broken.Store(true)
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	s.inflight--
	if s.tail == q {
		s.tail = nil
	}
	w := q.waiters
	q.waiters = nil
	return w
}

// busy reports whether commits of s are queued.
func (s *station) busy() bool {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	return s.inflight > 0
}

// answer calls the waiters of a commit answered with err: a failure means
// what they were judged on is lost.
func answer(waiters []func(error), err error) {
	if err != nil {
		err = fmt.Errorf("%w: %w", errResync, err)
	}
	for _, w := range waiters {
		w(err)
	}
}

// afterQueued calls fn once every commit of s queued so far is answered:
// with nil if they are durable, with an error wrapping errResync if one
// failed. s.mu is held (no commit is queued meanwhile). fn may run before
// afterQueued returns, or on the log's goroutine; it must not block.
func (s *station) afterQueued(fn func(error)) {
	s.pmu.Lock()
	if q := s.tail; q != nil {
		q.waiters = append(q.waiters, fn)
		s.pmu.Unlock()
		return
	}
	s.pmu.Unlock()
	if s.broken.Load() {
		fn(errResync)
		return
	}
	fn(nil)
}

// drain waits until every commit of s queued so far is answered (s.mu
// held).
func (s *station) drain() {
	ch := make(chan struct{})
	s.afterQueued(func(error) { close(ch) })
	<-ch
}

// encodeEvents encodes a transition's events of station sid.
func encodeEvents(sid string, now time.Time, evs []outEvent) ([]commitlog.Event, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	out := make([]commitlog.Event, len(evs))
	for i, ev := range evs {
		fields, err := json.Marshal(ev.Fields)
		if err != nil {
			return nil, fmt.Errorf("bridge: encode %s event: %w", ev.Type, err)
		}
		out[i] = commitlog.Event{Type: ev.Type, Time: now, StationID: sid, UserID: ev.UserID, Fields: fields}
	}
	return out, nil
}

// settleCommands stops the retries of a booking that ends in c: its pending
// reserve and unlock commands are marked failed in the same commit, so a
// reserve is never resent after the release that follows it.
func (b *Bridge) settleCommands(s *station, c *change) {
	for _, bc := range c.eff.Bookings {
		if activeStatus(bc.Status) {
			continue
		}
	next:
		for _, r := range s.cmds {
			if r.Cmd.BookingID != bc.ID || r.Cmd.Action == wire.ActionRelease || !r.pending() {
				continue
			}
			for _, u := range c.cmdUpdates {
				if u.Cmd.ID == r.Cmd.ID {
					continue next
				}
			}
			if upd, err := r.to(cmdFailed, "booking "+bc.Status); err == nil {
				c.cmdUpdates = append(c.cmdUpdates, upd)
			}
		}
	}
}

// sendAfter hands reqs to the sender once every commit of s queued so far
// is durable (s.mu held): the commands they carry are then on record.
func (b *Bridge) sendAfter(s *station, reqs []sendReq) {
	if len(reqs) == 0 {
		return
	}
	s.afterQueued(func(err error) {
		if err != nil {
			return // reloaded: the next tick resends what is on record
		}
		for _, req := range reqs {
			b.trySend(req)
		}
	})
}
