package stationagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/wire"
)

// errInterrupted is the stored result of a command whose execution was cut
// short by a restart: it is not executed again.
const errInterrupted = "interrupted by an agent restart; not executed again, see telemetry for the slot state"

// resChange is a reservation change applied together with a command's
// result.
type resChange struct {
	put   *Reservation
	del   int
	avail *availChange
}

// availChange is a set_availability to remember across restarts.
type availChange struct {
	slot      int
	available bool
}

// handleMessage executes one cmd message, at most once per command id, and
// acknowledges the MQTT message only after the result and its ack are
// durably queued. Main loop only.
func (a *Agent) handleMessage(ctx context.Context, m paho.Message) {
	defer m.Ack()
	payload := m.Payload()
	if len(payload) > wire.MaxPayload {
		a.log.Warn("command too large, dropped", "bytes", len(payload))
		return
	}
	var cmd wire.Command
	if err := json.Unmarshal(payload, &cmd); err != nil {
		var idOnly struct {
			ID string `json:"id"`
		}
		if json.Unmarshal(payload, &idOnly) != nil || idOnly.ID == "" || len(idOnly.ID) > 256 {
			a.log.Warn("undecodable command dropped", "err", err)
			return
		}
		cmd = wire.Command{ID: idOnly.ID, Action: "?"}
		a.finish(wire.Ack{ID: cmd.ID, Error: "bad command: " + oneLine(err.Error())}, nil)
		return
	}
	if cmd.ID == "" || len(cmd.ID) > 256 {
		a.log.Warn("command without a usable id dropped", "action", cmd.Action)
		return
	}
	rec, found, err := a.st.cmdResult(cmd.ID)
	if err != nil {
		a.log.Error("command history", "id", cmd.ID, "err", err)
		return
	}
	if found {
		if rec.Done {
			a.log.Info("repeated command answered from history", "id", cmd.ID, "action", cmd.Action, "ok", rec.Ack.OK)
			if b, err := json.Marshal(rec.Ack); err == nil {
				if err := a.st.queueAck(b); err != nil {
					a.log.Error("queue ack", "id", cmd.ID, "err", err)
				}
				a.kick()
			}
			return
		}
		// Begun but never finished: a restart cut it short.
		a.log.Warn("command interrupted by a restart, not executed again", "id", cmd.ID, "action", cmd.Action)
		a.finish(wire.Ack{ID: cmd.ID, Error: errInterrupted}, nil)
		return
	}
	if err := a.st.beginCmd(cmd.ID, a.now()); err != nil {
		a.log.Error("record command", "id", cmd.ID, "err", err)
		return
	}
	ack, change := a.execute(ctx, cmd)
	a.log.Info("command", "id", cmd.ID, "action", cmd.Action, "slot", cmd.Slot, "booking_id", cmd.BookingID, "ok", ack.OK, "error", ack.Error)
	a.finish(ack, change)
	// Report the effect at once rather than at the next poll.
	a.poll(ctx, false)
}

// finish stores the result, queues the ack and applies the reservation
// change in one transaction.
func (a *Agent) finish(ack wire.Ack, change *resChange) {
	b, _ := json.Marshal(ack)
	err := a.st.finishCmd(ack, a.now(), b, a.cfg.CommandHistory, a.cfg.CommandRetention, func(tx *boltTx) error {
		switch {
		case change == nil:
			return nil
		case change.avail != nil:
			return putAvailability(tx, change.avail.slot, change.avail.available)
		case change.put != nil:
			return putReservation(tx, *change.put)
		}
		return deleteReservation(tx, change.del)
	})
	if err != nil {
		a.log.Error("store command result", "id", ack.ID, "err", err)
		return
	}
	if change != nil && change.avail == nil {
		if change.put != nil {
			a.res[change.put.Slot] = *change.put
		} else {
			delete(a.res, change.del)
		}
		a.publishReservations()
	}
	a.kick()
}

func fail(id, format string, args ...any) (wire.Ack, *resChange) {
	return wire.Ack{ID: id, Error: fmt.Sprintf(format, args...)}, nil
}

// execute runs one new command against the driver. Main loop only.
func (a *Agent) execute(ctx context.Context, cmd wire.Command) (wire.Ack, *resChange) {
	id := cmd.ID
	ok := wire.Ack{ID: id, OK: true}
	nslots := len(a.current)
	checkSlot := func() error {
		if cmd.Slot < 1 || cmd.Slot > nslots {
			return fmt.Errorf("slot %d out of range 1..%d", cmd.Slot, nslots)
		}
		return nil
	}
	bySlotOrBooking := func() {
		if cmd.Slot == 0 && cmd.BookingID != "" {
			for s, r := range a.res {
				if r.BookingID == cmd.BookingID {
					cmd.Slot = s
				}
			}
		}
	}
	switch cmd.Action {
	case wire.ActionReserve:
		if err := checkSlot(); err != nil {
			return fail(id, "%v", err)
		}
		if cmd.BookingID == "" || len(cmd.BookingID) > 128 {
			return fail(id, "booking_id is required")
		}
		if !cmd.ExpiresAt.IsZero() && !cmd.ExpiresAt.After(a.now()) {
			return fail(id, "expires_at %s is in the past", cmd.ExpiresAt.Format("2006-01-02T15:04:05Z07:00"))
		}
		s := a.current[cmd.Slot-1]
		if !s.Occupied() {
			return fail(id, "slot %d is empty", cmd.Slot)
		}
		if s.Fault != "" {
			return fail(id, "slot %d is faulted: %s", cmd.Slot, s.Fault)
		}
		if r, held := a.res[cmd.Slot]; held && r.BookingID != cmd.BookingID {
			return fail(id, "slot %d is reserved for another booking", cmd.Slot)
		}
		if err := a.drv.SetIndicator(ctx, cmd.Slot, true); err != nil {
			return fail(id, "indicator: %v", err)
		}
		r := Reservation{Slot: cmd.Slot, BookingID: cmd.BookingID, ExpiresAt: cmd.ExpiresAt.UTC()}
		return ok, &resChange{put: &r}

	case wire.ActionRelease:
		bySlotOrBooking()
		r, held := a.res[cmd.Slot]
		if !held {
			if cmd.Slot != 0 {
				if err := checkSlot(); err != nil {
					return fail(id, "%v", err)
				}
			}
			return ok, nil // nothing held: releasing is idempotent
		}
		if cmd.BookingID != "" && r.BookingID != cmd.BookingID {
			return fail(id, "slot %d is reserved for another booking", cmd.Slot)
		}
		if err := a.drv.SetIndicator(ctx, cmd.Slot, false); err != nil {
			a.log.Warn("release: indicator", "slot", cmd.Slot, "err", err)
		}
		return ok, &resChange{del: cmd.Slot}

	case wire.ActionUnlock:
		if cmd.BookingID == "" {
			return fail(id, "booking_id is required")
		}
		bySlotOrBooking()
		if err := checkSlot(); err != nil {
			return fail(id, "%v", err)
		}
		r, held := a.res[cmd.Slot]
		if !held || r.BookingID != cmd.BookingID {
			return fail(id, "slot %d is not reserved for booking %s", cmd.Slot, cmd.BookingID)
		}
		if !r.ExpiresAt.IsZero() && !a.now().Before(r.ExpiresAt) {
			return fail(id, "reservation of slot %d expired", cmd.Slot)
		}
		if err := a.drv.Unlock(ctx, cmd.Slot); err != nil {
			return fail(id, "unlock: %v", err)
		}
		if err := a.drv.SetIndicator(ctx, cmd.Slot, false); err != nil {
			a.log.Warn("unlock: indicator", "slot", cmd.Slot, "err", err)
		}
		return ok, &resChange{del: cmd.Slot}

	case wire.ActionSetAvailability:
		if cmd.Available == nil {
			return fail(id, "available is required")
		}
		if cmd.Slot != 0 {
			if err := checkSlot(); err != nil {
				return fail(id, "%v", err)
			}
		}
		if err := a.drv.SetAvailability(ctx, cmd.Slot, *cmd.Available); err != nil {
			return fail(id, "set availability: %v", err)
		}
		return ok, &resChange{avail: &availChange{slot: cmd.Slot, available: *cmd.Available}}

	case wire.ActionSnapshot:
		a.poll(ctx, true)
		return ok, nil
	}
	return fail(id, "unknown action %q", cmd.Action)
}

// localReq is a technician's request from the control socket.
type localReq struct {
	slot   int
	reason string
	reply  chan error
}

// ErrBadRequest is returned by technician actions with bad arguments.
var ErrBadRequest = errors.New("bad request")

// handleLocal executes a technician's unlock: no reservation needed,
// recorded in the journal and reported through telemetry. Main loop only.
func (a *Agent) handleLocal(ctx context.Context, r localReq) error {
	if r.slot < 1 || r.slot > len(a.current) {
		return fmt.Errorf("%w: slot %d out of range 1..%d", ErrBadRequest, r.slot, len(a.current))
	}
	err := a.drv.Unlock(ctx, r.slot)
	e := JournalEntry{TS: a.now().UTC(), Action: "technician_unlock", Slot: r.slot, Reason: r.reason}
	if err != nil {
		e.Error = err.Error()
	}
	if jerr := a.st.journal(e); jerr != nil {
		a.log.Error("journal", "err", jerr)
	}
	a.log.Info("technician unlock", "slot", r.slot, "reason", r.reason, "err", err)
	if err != nil {
		return fmt.Errorf("unlock slot %d: %w", r.slot, err)
	}
	a.poll(ctx, false)
	return nil
}
