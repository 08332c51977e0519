package bridge

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/swapbridge/swapbridge/wire"
)

var telemetryPool = sync.Pool{New: func() any { return new(wire.Telemetry) }}

// HandlePublish applies one station message. The broker calls it on the
// connection's reader, one message of a station at a time, in the order
// received, and keeps reading while earlier messages are being committed.
//
// If it returns an error, done is never called and the message must not be
// acknowledged: errors wrapping wire.ErrBadPayload are malformed messages,
// which no resend can fix (the broker acknowledges and drops them); errors
// wrapping ErrStationNotFound come from unknown stations; ErrClosed from a
// closed bridge. Otherwise the message has been applied to the station's
// memory and its commit queued, and done is called exactly once: with nil
// once its effects and those of every earlier message of the station are
// durable (then it may be acknowledged), or with the error for which they
// are not (then neither it nor any later message of the station may be,
// and the station should be disconnected so that it resends). A duplicate,
// stale or superseded message changes nothing; its done reports when what
// it was judged on is durable. done may be called before HandlePublish
// returns or on the log's goroutine; it must not block. The station's Will
// arrives here as a status message.
func (b *Bridge) HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	if b.closed() {
		return ErrClosed
	}
	s, err := b.station(sid)
	if err != nil {
		return err
	}
	switch kind {
	case wire.KindTelemetry:
		return b.handleTelemetry(s, payload, done)
	case wire.KindStatus:
		return b.handleStatus(s, payload, done)
	case wire.KindAck:
		return b.handleAck(s, payload, done)
	}
	return fmt.Errorf("%w: station %s may not publish to %q", wire.ErrBadPayload, sid, kind)
}

func (b *Bridge) handleTelemetry(s *station, payload []byte, done func(error)) error {
	t := telemetryPool.Get().(*wire.Telemetry)
	defer telemetryPool.Put(t)
	slots := t.Slots[:cap(t.Slots)]
	clear(slots)
	*t = wire.Telemetry{Slots: slots[:0]}
	if err := decodeTelemetry(payload, t); err != nil {
		return fmt.Errorf("%w: telemetry from %s: %v", wire.ErrBadPayload, s.info.ID, err)
	}
	if err := t.Validate(s.info.Slots); err != nil {
		return fmt.Errorf("bridge: telemetry from %s: %w", s.info.ID, err)
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	now := b.cfg.Clock()
	next, eff := b.m.telemetry(&s.st, t, now)
	if eff.Ignored {
		// Acknowledged once what it duplicates is durable.
		s.afterQueued(done)
		return nil
	}
	b.shape(s, &next, &eff, now)
	b.commit(s, &change{next: next, eff: eff}, now, done)
	if eff.Snapshot {
		b.requestSnapshot(s, now)
	}
	return nil
}

func (b *Bridge) handleStatus(s *station, payload []byte, done func(error)) error {
	var st wire.Status
	if err := json.Unmarshal(payload, &st); err != nil {
		return fmt.Errorf("%w: status from %s: %v", wire.ErrBadPayload, s.info.ID, err)
	}
	if st.BootID == "" || len(st.BootID) > 128 || wire.HasControl(st.BootID) {
		return fmt.Errorf("%w: status from %s: boot_id must be 1..128 bytes without control characters", wire.ErrBadPayload, s.info.ID)
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	now := b.cfg.Clock()
	next, eff := b.m.status(&s.st, &st, now)
	if eff.Ignored {
		// Acknowledged once the state it was judged on is durable.
		s.afterQueued(done)
		return nil
	}
	b.commit(s, &change{next: next, eff: eff}, now, done)
	return nil
}

func (b *Bridge) handleAck(s *station, payload []byte, done func(error)) error {
	var ack wire.Ack
	if err := json.Unmarshal(payload, &ack); err != nil {
		return fmt.Errorf("%w: ack from %s: %v", wire.ErrBadPayload, s.info.ID, err)
	}
	if ack.ID == "" || len(ack.ID) > 128 || len(ack.Error) > 1024 || wire.HasControl(ack.Error) {
		// The error text reaches the user's notification.
		return fmt.Errorf("%w: ack from %s: id must be 1..128 bytes, error at most 1024 without control characters", wire.ErrBadPayload, s.info.ID)
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	r := s.cmds[ack.ID]
	if r == nil {
		// A snapshot, a repeated ack, or a command already settled:
		// acknowledged once the station's queued commits are answered
		// (judged on its commands, which a reload restores).
		s.afterQueued(func(error) { done(nil) })
		return nil
	}
	now := b.cfg.Clock()
	c := &change{next: s.st}
	if ack.OK {
		upd, err := r.to(cmdAcked, "")
		if err != nil {
			s.afterQueued(func(error) { done(nil) })
			return nil
		}
		c.cmdUpdates = []*command{upd}
		if r.Cmd.Action == wire.ActionReserve {
			c.next, c.eff = b.m.reserveAcked(&s.st, r.Cmd.BookingID, true, "", now)
		}
	} else {
		msg := ack.Error
		if msg == "" {
			msg = "refused"
		}
		upd, err := r.to(cmdFailed, msg)
		if err != nil {
			s.afterQueued(func(error) { done(nil) })
			return nil
		}
		c.cmdUpdates = []*command{upd}
		b.commandFailed(c, upd, true, now)
	}
	b.commit(s, c, now, done)
	return nil
}

// StationConnected notes a station's (re)connection: its pending commands
// are resent at the next tick. It does not block.
func (b *Bridge) StationConnected(sid string) {
	b.mu.RLock()
	s := b.stations[sid]
	b.mu.RUnlock()
	if s != nil {
		s.reconnected.Store(true)
	}
}

// StationDisconnected notes a lost connection. The station's Will (a status
// offline) and the inactivity timeout decide its status, so this only logs.
// It does not block.
func (b *Bridge) StationDisconnected(sid string) {
	b.lg.Debug("bridge: station disconnected", "station", sid)
}
