package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// publishTimeout bounds the store commit of one station message.
const publishTimeout = 15 * time.Second

var telemetryPool = sync.Pool{New: func() any { return new(wire.Telemetry) }}

// HandlePublish applies one station message and returns once its effects are
// durably stored. The broker calls it before the PUBACK: an error means the
// message must not be acknowledged and the station's connection should be
// closed so that it resends — except errors wrapping wire.ErrBadPayload
// (malformed messages, which no resend can fix: the broker acknowledges and
// drops them). Errors wrapping ErrStationNotFound come from unknown stations;
// anything else is a store failure. A duplicate, stale or superseded message
// returns nil and changes nothing. The station's Will arrives here as a
// status message.
func (b *Bridge) HandlePublish(sid string, kind wire.TopicKind, payload []byte) error {
	return b.handlePublish(sid, kind, payload, nil)
}

// handlePublish is HandlePublish (done nil) and SubmitPublish (see
// pipeline.go).
func (b *Bridge) handlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	if b.closed() {
		return ErrClosed
	}
	s, err := b.station(sid)
	if err != nil {
		return err
	}
	switch kind {
	case wire.KindTelemetry:
		return b.handleTelemetry(s, payload, done) // calls done itself
	case wire.KindStatus:
		err = b.handleStatus(s, payload)
	case wire.KindAck:
		err = b.handleAck(s, payload)
	default:
		err = fmt.Errorf("%w: station %s may not publish to %q", wire.ErrBadPayload, sid, kind)
	}
	if err == nil && done != nil {
		done(nil)
	}
	return err
}

// handleTelemetry applies a telemetry. With done nil it returns once its
// commit is durable. With done set (SubmitPublish), a transition that only
// changes the station's state and appends events is applied to s.st at once
// and its commit queued; done reports the commit's outcome. Anything else
// is committed before it returns, and done(nil) is called then.
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
	if !eff.Ignored {
		b.shape(s, &next, &eff, now)
	}
	switch {
	case eff.Ignored:
		// Acknowledged once what it duplicates is durable.
		if err := b.waitDurable(s); err != nil {
			return fmt.Errorf("bridge: telemetry from %s: %w", s.info.ID, err)
		}
	case done != nil && len(eff.Bookings) == 0 && len(eff.Commands) == 0:
		// Bookings and commands have side effects after their commit (the
		// command cache, the sender), so only the rest is pipelined.
		if err := b.queueCommit(s, next, eff.Events, now, done); err != nil {
			return err
		}
		done = nil // called by the commit
	default:
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		if err := b.commit(ctx, s, &change{next: next, eff: eff}, now); err != nil {
			return err
		}
	}
	if eff.Snapshot {
		b.requestSnapshot(s, now)
	}
	if done != nil {
		done(nil)
	}
	return nil
}

func (b *Bridge) handleStatus(s *station, payload []byte) error {
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
		if err := b.waitDurable(s); err != nil {
			return fmt.Errorf("bridge: status from %s: %w", s.info.ID, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	return b.commit(ctx, s, &change{next: next, eff: eff}, now)
}

func (b *Bridge) handleAck(s *station, payload []byte) error {
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
		// A snapshot, a repeated ack, or a command already settled;
		// acknowledged once the station's queued commits are durable
		// (judged on the commands, which a failed one does not touch).
		_ = b.waitDurable(s)
		return nil
	}
	now := b.cfg.Clock()
	upd := *r
	c := &change{next: s.st, cmdUpdates: []*commandRec{&upd}}
	if ack.OK {
		upd.State = cmdAcked
		if r.Cmd.Action == wire.ActionReserve {
			c.next, c.eff = b.m.reserveAcked(&s.st, r.Cmd.BookingID, true, "", now)
		}
	} else {
		upd.State, upd.Error = cmdFailed, ack.Error
		if upd.Error == "" {
			upd.Error = "refused"
		}
		b.commandFailed(c, &upd, true, now)
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	return b.commit(ctx, s, c, now)
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
	b.log.Debug("bridge: station disconnected", "station", sid)
}
