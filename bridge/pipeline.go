package bridge

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Pipelined telemetry.
//
// HandlePublish returns only after the message's commit is durable, so a
// broker that calls it on the connection's reader has one message of each
// station in the store at a time. SubmitPublish lets the broker keep reading:
// a telemetry whose transition only changes the station's state and appends
// events (the usual case) is applied to the in-memory state at once and its
// commit is queued with store.UpdateAsync; done reports when it is durable,
// and the broker acknowledges then, in order. Anything else (status, acks,
// telemetry that touches bookings or commands, duplicates) is handled as
// HandlePublish does, after the station's queued commits are durable.
//
// The store commits requests in the order they are queued, and a station's
// requests are queued under its mutex in the order its state advanced, so
// the state records and events reach the disk in order. st can be ahead of
// the store by the station's queued commits: readers of st (the HTTP API,
// bookings) see a telemetry some milliseconds before it is durable, and a
// change derived from it is queued behind it. If one of the station's
// queued commits fails, the station is marked broken: every later commit of
// the station fails in its transaction (so none is kept that was derived
// from the lost one), and the next lockStation waits for the queued
// commits to be answered and reloads st from the store.

var errResync = errors.New("bridge: station state is being reloaded after a failed commit")

// failPipelined is set only by tests: a pipelined commit of station sid
// fails in its transaction with the error it returns, if not nil.
var failPipelined atomic.Pointer[func(sid string) error]

// lockStation locks s.mu. If a pipelined commit of s failed, it first waits
// for the station's queued commits to be answered and reloads st from the
// store; if that fails the station stays broken and its commits keep
// failing until a later lockStation succeeds.
func (b *Bridge) lockStation(s *station) {
	s.mu.Lock()
	if !s.broken.Load() {
		return
	}
	_ = b.waitDurable(s) // broken: reloaded below whatever the outcome
	var st StationState
	err := b.store.View(func(tx *store.Tx) (err error) {
		st, err = b.loadState(tx, s.info)
		return err
	})
	if err != nil {
		b.log.Warn("bridge: reload station state after a failed commit", "station", s.info.ID, "error", err)
		return
	}
	s.st = st
	s.broken.Store(false)
	b.log.Info("bridge: station state reloaded after a failed commit", "station", s.info.ID)
}

// waitDurable returns once every pipelined commit of s queued so far has
// been answered. The caller holds s.mu, so no new one is queued meanwhile.
// It returns errResync if one of them failed: s.st, on which the caller
// judged a message, is then not what the store holds, and a message judged
// a duplicate of a lost one must not be acknowledged.
func (b *Bridge) waitDurable(s *station) error {
	s.pmu.Lock()
	if s.inflight == 0 {
		s.pmu.Unlock()
	} else {
		if s.drained == nil {
			s.drained = make(chan struct{})
		}
		ch := s.drained
		s.pmu.Unlock()
		<-ch
	}
	if s.broken.Load() {
		return errResync
	}
	return nil
}

// settled is called on the committer goroutine when a pipelined commit of
// s is answered.
func (s *station) settled(err error) {
	if err != nil {
		s.broken.Store(true)
	}
	s.pmu.Lock()
	s.inflight--
	if s.inflight == 0 && s.drained != nil {
		close(s.drained)
		s.drained = nil
	}
	s.pmu.Unlock()
}

// SubmitPublish is HandlePublish for a broker that pipelines a station's
// messages. If it returns an error, done is never called and the error means
// what it means for HandlePublish. Otherwise done is called exactly once:
// with nil once the message's effects (if any) and those of every message of
// the station submitted before it are durable, or with the error that
// HandlePublish would have returned (the message was not applied). done may
// be called before SubmitPublish returns or later on the store's committer
// goroutine; it must not block.
//
// Calls for one station must be made one at a time, in the order the
// messages were received (the broker calls it on the connection's reader).
func (b *Bridge) SubmitPublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	return b.handlePublish(sid, kind, payload, done)
}

// queueCommit queues the commit of a telemetry transition of s (whose mu
// the caller holds) that only changes its state and appends events, and
// applies it to s.st. done gets the commit's outcome.
func (b *Bridge) queueCommit(s *station, next StationState, events []outEvent, now time.Time, done func(error)) error {
	if s.removed.Load() {
		return fmt.Errorf("bridge: commit station %s: %w", s.info.ID, ErrStationNotFound)
	}
	fields, err := encodeFields(events)
	if err != nil {
		return err
	}
	enc := stateBufPool.Get().(*[]byte)
	*enc = appendState((*enc)[:0], &next)
	s.pmu.Lock()
	s.inflight++
	s.pmu.Unlock()
	err = b.store.UpdateAsync(func(tx *store.Tx) error {
		if s.broken.Load() {
			return errResync
		}
		if f := failPipelined.Load(); f != nil {
			if err := (*f)(s.info.ID); err != nil {
				return err
			}
		}
		if err := tx.Put(store.KindStationState, s.info.ID, *enc); err != nil {
			return err
		}
		return appendEvents(tx, s.info.ID, now, events, fields)
	}, func(_ []store.Event, err error) {
		stateBufPool.Put(enc)
		s.settled(err)
		if err != nil {
			err = fmt.Errorf("bridge: commit station %s: %w", s.info.ID, err)
		}
		done(err)
	})
	if err != nil {
		stateBufPool.Put(enc)
		s.settled(nil)
		return fmt.Errorf("bridge: commit station %s: %w", s.info.ID, err)
	}
	s.st = next
	return nil
}
