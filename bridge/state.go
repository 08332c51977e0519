package bridge

import (
	"slices"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// maxOldBoots bounds how many superseded boot ids a station remembers.
const maxOldBoots = 8

// stationState is the bridge's record of one station (stored under
// commitlog.KindStationState, key = station id). The in-memory copy changes
// when a transition's commit is queued, so it is ahead of the stored one by
// the station's queued commits, which become durable in order; a failed
// commit reloads it from the log (engine.go).
type stationState struct {
	ID string `json:"id"`
	// Online: the station's current boot said so (status online or
	// telemetry) and neither its Will nor the inactivity timeout said
	// otherwise.
	Online bool `json:"online,omitempty"`
	// Maintenance is the operator's status; it hides every battery.
	Maintenance bool   `json:"maint,omitempty"`
	BootID      string `json:"boot,omitempty"`
	// OldBoots are boot ids superseded by BootID (newest last); their
	// messages are ignored.
	OldBoots     []string    `json:"old,omitempty"`
	Seq          uint64      `json:"seq,omitempty"`
	LastSeen     time.Time   `json:"seen,omitzero"`
	OfflineSince time.Time   `json:"off,omitzero"`
	Slots        []slotState `json:"slots"`
	// Status and Inv are what was last published (station_status and
	// inventory_update); a change emits an event.
	Status string         `json:"status"`
	Inv    wire.Inventory `json:"inv"`
}

// slotState is one slot: the last reported hardware state plus the
// reservation overlay.
type slotState struct {
	// Known: the station has reported this slot at least once.
	Known     bool    `json:"k,omitempty"`
	BatteryID string  `json:"b,omitempty"`
	SoC       float64 `json:"soc,omitempty"`
	SoH       float64 `json:"soh,omitempty"`
	TempC     float64 `json:"t,omitempty"`
	VoltageV  float64 `json:"v,omitempty"`
	Charging  bool    `json:"chg,omitempty"`
	Door      string  `json:"door,omitempty"`
	Locked    bool    `json:"lock,omitempty"`
	Fault     string  `json:"fault,omitempty"`
	// Res is the active booking holding this slot's battery (zero: none).
	Res reservation `json:"res,omitzero"`
}

// reservation is the overlay an active booking (pending, confirmed or ready)
// puts on its slot. It mirrors the booking record and changes in the same
// transaction.
type reservation struct {
	BookingID string `json:"id"`
	UserID    string `json:"uid"`
	BatteryID string `json:"b"`
	Status    string `json:"st"` // pending | confirmed | ready
	// Unlocked: collect sent an unlock; a removal now completes the booking.
	Unlocked bool `json:"unl,omitempty"`
	// ExpiresAt: ready+hold once ready, before that created+ChargeWait.
	ExpiresAt time.Time `json:"exp"`
}

func (r *reservation) active() bool { return r.BookingID != "" }

// clone returns a deep copy.
func (s *stationState) clone() stationState {
	c := *s
	c.OldBoots = slices.Clone(s.OldBoots)
	c.Slots = slices.Clone(s.Slots)
	return c
}

// thresholds are the domain rules' numbers.
type thresholds struct {
	readySoC, minSoH, maxTempC float64
	hold, chargeWait           time.Duration
}

// healthy reports whether the slot holds a battery that may be booked:
// occupied, closed, locked, no fault, soh above the floor.
func (t *thresholds) healthy(s *slotState) bool {
	return s.BatteryID != "" && s.Door == wire.DoorClosed && s.Locked && s.Fault == "" && s.SoH >= t.minSoH
}

// ready reports whether the battery would be swappable if it were not
// reserved (station conditions excluded).
func (t *thresholds) ready(s *slotState) bool {
	return t.healthy(s) && s.SoC >= t.readySoC && s.TempC <= t.maxTempC
}

// up reports whether the station's batteries may be offered at all.
func up(st *stationState) bool { return st.Online && !st.Maintenance }

// swappable is the contract's rule.
func (t *thresholds) swappable(st *stationState, s *slotState) bool {
	return up(st) && !s.Res.active() && t.ready(s)
}

// inventory counts the station's slots by the contract's rules:
// available = swappable; booked = reserved by an active booking; faulted =
// reporting a fault (whether or not occupied); empty = no battery and no
// fault; unavailable = every other battery of a station that is offline or
// in maintenance; charging = every other battery of a station that is up
// (occupied, unreserved, no fault, not swappable: still charging, too hot,
// door open). The six counts add up to total_slots.
func (t *thresholds) inventory(st *stationState) wire.Inventory {
	inv := wire.Inventory{TotalSlots: len(st.Slots)}
	for i := range st.Slots {
		s := &st.Slots[i]
		switch {
		case s.Fault != "":
			inv.FaultedSlots++
		case s.Res.active():
			inv.BookedBatteries++
		case s.BatteryID == "":
			inv.EmptySlots++
		case !up(st):
			inv.UnavailableBatteries++
		case t.swappable(st, s):
			inv.AvailableBatteries++
		default:
			inv.ChargingBatteries++
		}
	}
	return inv
}

// statusOf derives the published station status: maintenance (operator)
// wins, then offline, then faulted (every slot reports a fault), else
// online.
func statusOf(st *stationState) string {
	switch {
	case st.Maintenance:
		return wire.StationMaintenance
	case !st.Online:
		return wire.StationOffline
	}
	if len(st.Slots) > 0 {
		all := true
		for i := range st.Slots {
			if st.Slots[i].Fault == "" {
				all = false
				break
			}
		}
		if all {
			return wire.StationFaulted
		}
	}
	return wire.StationOnline
}

// outEvent is an event to append: its type, the user channel (empty for the
// station channel) and its wire fields struct.
type outEvent struct {
	Type   string
	UserID string
	Fields any
	// Churn marks a battery_removed of a battery no booking held: like
	// battery_added, the station's event budget may coalesce it (see
	// budget.go).
	Churn bool
}

// bookingChange is a booking record update derived by the state machine.
type bookingChange struct {
	ID        string
	Status    string
	Reason    string
	ExpiresAt time.Time
}

// effects is what a transition produced besides the next state.
type effects struct {
	Events   []outEvent
	Bookings []bookingChange
	// Commands to persist and send (the bridge assigns ids).
	Commands []wire.Command
	// Snapshot asks the station for a full telemetry (not persisted).
	Snapshot bool
	// Ignored: the message had no effect (duplicate, superseded boot).
	Ignored bool
}

func (e *effects) event(typ, uid string, fields any) {
	e.Events = append(e.Events, outEvent{Type: typ, UserID: uid, Fields: fields})
}

// changed reports whether the transition has anything to persist.
func (e *effects) empty() bool {
	return len(e.Events) == 0 && len(e.Bookings) == 0 && len(e.Commands) == 0
}

// machine holds the pure transitions: previous state + input → next state +
// effects. None of them touches the store, the clock or the network.
type machine struct {
	thresholds
}

// newSlots returns n unknown, empty slots.
func newStation(id string, slots int) stationState {
	st := stationState{ID: id, Slots: make([]slotState, slots), Status: wire.StationOffline}
	return st
}

// acceptBoot decides whether a message from bootID may change the station.
// The rule: the current boot is accepted; a boot in OldBoots never is; an
// unseen boot replaces the current one only with proof that it is the live
// agent (a status online, or a full telemetry — the first telemetry of a
// connection is full), and the replaced boot joins OldBoots. Anything else
// (a partial telemetry or a Will from an unseen boot) is ignored.
func acceptBoot(st *stationState, bootID string, proof bool) (accept, isNew bool) {
	if bootID == st.BootID && bootID != "" {
		return true, false
	}
	if slices.Contains(st.OldBoots, bootID) {
		return false, false
	}
	if !proof {
		return false, false
	}
	return true, true
}

func switchBoot(st *stationState, bootID string) {
	if st.BootID != "" {
		st.OldBoots = append(st.OldBoots, st.BootID)
		if n := len(st.OldBoots); n > maxOldBoots {
			st.OldBoots = slices.Delete(st.OldBoots, 0, n-maxOldBoots)
		}
	}
	st.BootID = bootID
	st.Seq = 0
}

// markOnline records a sign of life.
func markOnline(st *stationState, now time.Time) {
	st.LastSeen = now
	if !st.Online {
		st.Online = true
		st.OfflineSince = time.Time{}
	}
}

// markOffline records the station's loss.
func markOffline(st *stationState, now time.Time) {
	if st.Online {
		st.Online = false
		st.OfflineSince = now
	}
}

// status applies a status message (or the Will). A status online of an
// unseen boot switches to it; a status offline counts only for the current
// boot.
func (m *machine) status(prev *stationState, s *wire.Status, now time.Time) (stationState, effects) {
	var eff effects
	accept, isNew := acceptBoot(prev, s.BootID, s.Online)
	if !accept {
		eff.Ignored = true
		return *prev, eff
	}
	next := prev.clone()
	if isNew {
		switchBoot(&next, s.BootID)
	}
	if s.Online {
		markOnline(&next, now)
	} else {
		markOffline(&next, now)
	}
	m.finish(&next, &eff, now)
	return next, eff
}

// telemetry applies a validated telemetry message. Duplicates and older seqs
// of the current boot are ignored; a gap asks for a snapshot (the message is
// still applied); a partial message of an unseen boot is ignored and asks
// for a snapshot.
func (m *machine) telemetry(prev *stationState, t *wire.Telemetry, now time.Time) (stationState, effects) {
	var eff effects
	accept, isNew := acceptBoot(prev, t.BootID, t.Full)
	if !accept {
		eff.Ignored = true
		// A partial message of a boot we have not seen: we missed its start.
		eff.Snapshot = t.BootID != prev.BootID && !slices.Contains(prev.OldBoots, t.BootID)
		return *prev, eff
	}
	if !isNew && t.Seq <= prev.Seq {
		eff.Ignored = true
		return *prev, eff
	}
	next := prev.clone()
	if isNew {
		switchBoot(&next, t.BootID)
	}
	// A full message carries everything a gap could have lost.
	eff.Snapshot = !t.Full && t.Seq != next.Seq+1
	next.Seq = t.Seq
	markOnline(&next, now)
	for i := range t.Slots {
		in := &t.Slots[i]
		if in.Slot < 1 || in.Slot > len(next.Slots) {
			continue // Validate rejects these; never index out of range.
		}
		m.slot(&next, in.Slot-1, in, &eff)
	}
	m.finish(&next, &eff, now)
	return next, eff
}

// slot applies one reported slot.
func (m *machine) slot(st *stationState, i int, in *wire.Slot, eff *effects) {
	old := st.Slots[i]
	cur := slotState{
		Known:     true,
		BatteryID: in.Battery(),
		SoC:       in.SoC,
		SoH:       in.SoH,
		TempC:     in.TempC,
		VoltageV:  in.VoltageV,
		Charging:  in.Charging,
		Door:      in.Door,
		Locked:    in.Locked,
		Fault:     in.Fault,
		Res:       old.Res,
	}
	st.Slots[i] = cur
	s := &st.Slots[i]
	slot := i + 1
	if old.Known && old.BatteryID != "" && old.BatteryID != cur.BatteryID {
		r := &s.Res
		switch {
		case r.active() && r.BatteryID == old.BatteryID && r.Unlocked:
			eff.event(wire.TypeBatteryCollected, "", wire.BatteryBooked{StationID: st.ID, Slot: slot, BatteryID: old.BatteryID, BookingID: r.BookingID})
			eff.Bookings = append(eff.Bookings, bookingChange{ID: r.BookingID, Status: wire.BookingStatusCollected, ExpiresAt: r.ExpiresAt})
			s.Res = reservation{}
		case r.active():
			eff.event(wire.TypeBatteryRemoved, "", wire.BatteryRemoved{StationID: st.ID, Slot: slot, BatteryID: old.BatteryID, Reason: "reserved battery removed without unlock"})
			m.fail(st, i, "the reserved battery was removed from the station", eff)
		default:
			eff.Events = append(eff.Events, outEvent{Type: wire.TypeBatteryRemoved, Churn: true,
				Fields: wire.BatteryRemoved{StationID: st.ID, Slot: slot, BatteryID: old.BatteryID, Reason: "removed without a booking"}})
		}
	}
	if old.Known && cur.BatteryID != "" && cur.BatteryID != old.BatteryID {
		eff.event(wire.TypeBatteryAdded, "", wire.BatteryAdded{StationID: st.ID, Slot: slot, BatteryID: cur.BatteryID, SoC: cur.SoC})
	}
	if s.Fault != "" && s.Res.active() {
		m.fail(st, i, "slot fault: "+s.Fault, eff)
	}
}

// end finishes the active booking of slot i with status and reason, notifies
// its user, clears the overlay and queues a release for the station.
func (m *machine) end(st *stationState, i int, status, title, reason, level string, eff *effects) {
	r := st.Slots[i].Res
	if !r.active() {
		return
	}
	eff.Bookings = append(eff.Bookings, bookingChange{ID: r.BookingID, Status: status, Reason: reason, ExpiresAt: r.ExpiresAt})
	eff.event(wire.TypeNotification, r.UserID, wire.Notification{Title: title, Message: reason, Level: level, BookingID: r.BookingID})
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionRelease, Slot: i + 1, BookingID: r.BookingID})
	st.Slots[i].Res = reservation{}
}

func (m *machine) fail(st *stationState, i int, reason string, eff *effects) {
	m.end(st, i, wire.BookingStatusFailed, "Booking failed", reason, wire.LevelWarning, eff)
}

// finish derives what follows from any change: confirmed bookings whose
// battery became swappable turn ready (their hold starts), and a changed
// station status or inventory is published.
func (m *machine) finish(st *stationState, eff *effects, now time.Time) {
	if up(st) {
		for i := range st.Slots {
			s := &st.Slots[i]
			if s.Res.Status != wire.BookingStatusConfirmed || !m.ready(s) || s.BatteryID != s.Res.BatteryID {
				continue
			}
			s.Res.Status = wire.BookingStatusReady
			s.Res.ExpiresAt = now.Add(m.hold)
			eff.Bookings = append(eff.Bookings, bookingChange{ID: s.Res.BookingID, Status: wire.BookingStatusReady, ExpiresAt: s.Res.ExpiresAt})
			eff.event(wire.TypeBookingReady, s.Res.UserID, wire.BookingReady{BookingID: s.Res.BookingID, StationID: st.ID, Slot: i + 1, BatteryID: s.BatteryID, SoC: s.SoC})
		}
	}
	if status := statusOf(st); status != st.Status {
		st.Status = status
		eff.event(wire.TypeStationStatus, "", wire.StationStatus{StationID: st.ID, Status: status, LastSeen: st.LastSeen})
	}
	if inv := m.inventory(st); inv != st.Inv {
		st.Inv = inv
		eff.event(wire.TypeInventoryUpdate, "", wire.InventoryUpdate{StationID: st.ID, Inventory: inv})
	}
}

// pick chooses the battery for a new booking: the highest-soc swappable one,
// else the highest-soc healthy unreserved one still charging. -1: none.
// An offline or maintained station offers none.
func (m *machine) pick(st *stationState) int {
	if !up(st) {
		return -1
	}
	best, bestReady := -1, false
	for i := range st.Slots {
		s := &st.Slots[i]
		if s.Res.active() || !m.healthy(s) {
			continue
		}
		r := m.ready(s)
		switch {
		case best < 0, r && !bestReady, r == bestReady && s.SoC > st.Slots[best].SoC:
			best, bestReady = i, r
		}
	}
	return best
}

// book reserves slot i for a new pending booking.
func (m *machine) book(prev *stationState, i int, bookingID, userID string, now time.Time) (stationState, effects) {
	var eff effects
	next := prev.clone()
	s := &next.Slots[i]
	s.Res = reservation{
		BookingID: bookingID, UserID: userID, BatteryID: s.BatteryID,
		Status: wire.BookingStatusPending, ExpiresAt: now.Add(m.chargeWait),
	}
	eff.event(wire.TypeBatteryBooked, "", wire.BatteryBooked{StationID: next.ID, Slot: i + 1, BatteryID: s.BatteryID, BookingID: bookingID})
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionReserve, Slot: i + 1, BookingID: bookingID, ExpiresAt: now.Add(m.chargeWait + m.hold)})
	m.finish(&next, &eff, now)
	return next, eff
}

// findRes returns the slot index holding bookingID, or -1.
func findRes(st *stationState, bookingID string) int {
	for i := range st.Slots {
		if st.Slots[i].Res.BookingID == bookingID {
			return i
		}
	}
	return -1
}

// reserveAcked applies the station's answer to a reserve: ok confirms the
// booking (booking_confirmed, then booking_ready at once if the battery is
// already swappable); a refusal fails it.
func (m *machine) reserveAcked(prev *stationState, bookingID string, ok bool, errMsg string, now time.Time) (stationState, effects) {
	var eff effects
	i := findRes(prev, bookingID)
	if i < 0 || prev.Slots[i].Res.Status != wire.BookingStatusPending {
		eff.Ignored = true
		return *prev, eff
	}
	next := prev.clone()
	r := &next.Slots[i].Res
	if !ok {
		reason := "the station refused the reservation"
		if errMsg != "" {
			reason += ": " + errMsg
		}
		bid, uid, exp := r.BookingID, r.UserID, r.ExpiresAt
		next.Slots[i].Res = reservation{}
		eff.Bookings = append(eff.Bookings, bookingChange{ID: bid, Status: wire.BookingStatusFailed, Reason: reason, ExpiresAt: exp})
		eff.event(wire.TypeNotification, uid, wire.Notification{Title: "Booking failed", Message: reason, Level: wire.LevelWarning, BookingID: bid})
		m.finish(&next, &eff, now)
		return next, eff
	}
	r.Status = wire.BookingStatusConfirmed
	eff.Bookings = append(eff.Bookings, bookingChange{ID: r.BookingID, Status: wire.BookingStatusConfirmed, ExpiresAt: r.ExpiresAt})
	confirmed := wire.BookingConfirmed{BookingID: r.BookingID, StationID: next.ID, Slot: i + 1, BatteryID: r.BatteryID, ExpiresAt: r.ExpiresAt}
	if up(&next) && m.ready(&next.Slots[i]) {
		// Ready at once: the hold starts now and the confirmation says so.
		confirmed.ExpiresAt = now.Add(m.hold)
	}
	eff.event(wire.TypeBookingConfirmed, r.UserID, confirmed)
	m.finish(&next, &eff, now)
	return next, eff
}

// reserveTimedOut fails a booking whose reserve was never acknowledged; a
// release is queued in case the station did reserve.
func (m *machine) reserveTimedOut(prev *stationState, bookingID string, now time.Time) (stationState, effects) {
	var eff effects
	i := findRes(prev, bookingID)
	if i < 0 || prev.Slots[i].Res.Status != wire.BookingStatusPending {
		eff.Ignored = true
		return *prev, eff
	}
	next := prev.clone()
	m.fail(&next, i, "the station did not confirm the reservation", &eff)
	m.finish(&next, &eff, now)
	return next, eff
}

// cancel ends an active booking at the user's request.
func (m *machine) cancel(prev *stationState, bookingID string, now time.Time) (stationState, effects, bool) {
	var eff effects
	i := findRes(prev, bookingID)
	if i < 0 {
		return *prev, eff, false
	}
	next := prev.clone()
	r := next.Slots[i].Res
	eff.Bookings = append(eff.Bookings, bookingChange{ID: r.BookingID, Status: wire.BookingStatusCancelled, Reason: "cancelled by the user", ExpiresAt: r.ExpiresAt})
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionRelease, Slot: i + 1, BookingID: r.BookingID})
	next.Slots[i].Res = reservation{}
	m.finish(&next, &eff, now)
	return next, eff, true
}

// collect marks a ready booking's slot unlocked and queues the unlock. Only
// ready bookings may be collected; collect may be repeated (a door that
// closed again with the battery inside).
func (m *machine) collect(prev *stationState, bookingID string, now time.Time) (stationState, effects, bool) {
	var eff effects
	i := findRes(prev, bookingID)
	if i < 0 || prev.Slots[i].Res.Status != wire.BookingStatusReady {
		return *prev, eff, false
	}
	next := prev.clone()
	next.Slots[i].Res.Unlocked = true
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionUnlock, Slot: i + 1, BookingID: bookingID})
	m.finish(&next, &eff, now)
	return next, eff, true
}

// timers applies the clock: inactivity (no message for offlineAfter marks
// the station offline), hold and charge-wait expiry, and the offline period
// that fails bookings.
// timersDue reports whether timers could change st at now: the liveness
// timeout has passed, or an active reservation has reached its expiry or
// its station's offline limit. When it reports false, timers returns st
// unchanged with no effects (st was finished by the commit that stored it).
func (m *machine) timersDue(st *stationState, now time.Time, offlineAfter, offlineFail time.Duration) bool {
	if st.Online && !st.LastSeen.IsZero() && now.Sub(st.LastSeen) >= offlineAfter {
		return true
	}
	for i := range st.Slots {
		r := &st.Slots[i].Res
		if !r.active() {
			continue
		}
		if !st.Online && !st.OfflineSince.IsZero() && now.Sub(st.OfflineSince) >= offlineFail {
			return true
		}
		if !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt) {
			return true
		}
	}
	return false
}

func (m *machine) timers(prev *stationState, now time.Time, offlineAfter, offlineFail time.Duration) (stationState, effects) {
	var eff effects
	next := prev.clone()
	if next.Online && !next.LastSeen.IsZero() && now.Sub(next.LastSeen) >= offlineAfter {
		markOffline(&next, now)
	}
	for i := range next.Slots {
		r := &next.Slots[i].Res
		if !r.active() {
			continue
		}
		switch {
		case !next.Online && !next.OfflineSince.IsZero() && now.Sub(next.OfflineSince) >= offlineFail:
			m.fail(&next, i, "the station has been offline too long", &eff)
		case !r.ExpiresAt.IsZero() && !now.Before(r.ExpiresAt):
			msg := "your battery hold ended and the battery was released"
			if r.Status != wire.BookingStatusReady {
				msg = "the battery did not become ready in time"
			}
			m.end(&next, i, wire.BookingStatusExpired, "Booking expired", msg, wire.LevelInfo, &eff)
		}
	}
	m.finish(&next, &eff, now)
	if eff.empty() && next.Online == prev.Online {
		return *prev, eff
	}
	return next, eff
}

// setMaintenance applies the operator's status.
func (m *machine) setMaintenance(prev *stationState, on bool, now time.Time) (stationState, effects) {
	var eff effects
	next := prev.clone()
	next.Maintenance = on
	m.finish(&next, &eff, now)
	return next, eff
}
