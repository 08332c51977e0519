package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/wire"
)

// Book books the best battery of the station for the user: the highest-soc
// swappable one, else the highest-soc healthy one still charging. The
// booking (status pending), the slot's reservation, the reserve command and
// the station's battery_booked and inventory_update events are stored in one
// commit; then reserve is sent. booking_confirmed follows the station's ack.
// Errors: ErrBadRequest (user id), ErrStationNotFound, ErrNoBatteryAvailable
// (also when the station is offline or in maintenance), ErrBookingLimit
// (the user already holds Config.MaxActiveBookings active bookings, at any
// stations; checked and reserved atomically with the booking). Blocks for
// one commit.
func (b *Bridge) Book(ctx context.Context, userID, stationID string) (wire.Booking, error) {
	if err := wire.CheckID("user id", userID); err != nil {
		return wire.Booking{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := wire.CheckID("station_id", stationID); err != nil {
		return wire.Booking{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	s, err := b.station(stationID)
	if err != nil {
		return wire.Booking{}, err
	}
	b.lockStation(s)
	if b.closed() {
		s.mu.Unlock()
		return wire.Booking{}, ErrClosed
	}
	i := b.m.pick(&s.st)
	if i < 0 {
		s.mu.Unlock()
		return wire.Booking{}, fmt.Errorf("%w at station %s", ErrNoBatteryAvailable, stationID)
	}
	now := b.cfg.Clock()
	id := newID("bk", now)
	ok, err := b.active.reserve(b.bookingRecord, userID, id)
	if err != nil {
		s.mu.Unlock()
		return wire.Booking{}, fmt.Errorf("bridge: bookings of %s: %w", userID, err)
	}
	if !ok {
		s.mu.Unlock()
		return wire.Booking{}, fmt.Errorf("%w: %s holds %d active bookings", ErrBookingLimit, userID, b.active.limit)
	}
	next, eff := b.m.book(&s.st, i, id, userID, now)
	res := next.Slots[i].Res
	bk := &booking{wire.Booking{
		ID: id, UserID: userID, StationID: stationID, Slot: i + 1, BatteryID: res.BatteryID,
		Status: wire.BookingStatusPending, CreatedAt: now.UTC(), ExpiresAt: res.ExpiresAt.UTC(),
	}}
	// The commit settles the user's place (committed, or given back).
	if err := b.commitWait(ctx, s, &change{next: next, eff: eff, newBooking: bk}, now); err != nil {
		return wire.Booking{}, err
	}
	return bk.Booking, nil
}

// Booking returns the user's booking; ErrBookingNotFound also for someone
// else's.
func (b *Bridge) Booking(userID, bookingID string) (wire.Booking, error) {
	bk, err := b.bookingRecord(bookingID)
	if err != nil {
		return wire.Booking{}, err
	}
	if bk.UserID != userID {
		return wire.Booking{}, fmt.Errorf("%w: %s", ErrBookingNotFound, bookingID)
	}
	return bk, nil
}

// UserBookings returns the user's bookings, newest first.
func (b *Bridge) UserBookings(userID string) ([]wire.Booking, error) {
	if err := wire.CheckID("user id", userID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	var ids []string
	prefix := userID + "/"
	err := b.log.Records(commitlog.KindUserBooking, prefix, func(key string, _ []byte) bool {
		ids = append(ids, strings.TrimPrefix(key, prefix))
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: bookings of %s: %w", userID, err)
	}
	var out []wire.Booking
	for _, id := range ids {
		bk, err := b.bookingRecord(id)
		if errors.Is(err, ErrBookingNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("bridge: bookings of %s: %w", userID, err)
		}
		out = append(out, bk)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.After(out[j].CreatedAt)
		}
		return out[i].ID > out[j].ID
	})
	return out, nil
}

// Cancel cancels an active booking (pending, confirmed or ready, even after
// an unlock) and sends release. ErrBookingNotFound, ErrBookingState (already
// collected, cancelled, expired or failed). Blocks for one commit.
func (b *Bridge) Cancel(ctx context.Context, userID, bookingID string) (wire.Booking, error) {
	return b.bookingOp(ctx, userID, bookingID, func(s *station) (change, bool) {
		next, eff, ok := b.m.cancel(&s.st, bookingID, b.cfg.Clock())
		return change{next: next, eff: eff}, ok
	})
}

// Collect unlocks a ready booking's slot (sends unlock). Only ready
// bookings may be collected: a confirmed booking's battery is not swappable
// yet. Collect may be repeated while the booking is ready (a door closed
// again with the battery inside). The booking turns collected when the
// station reports the battery gone. ErrBookingNotFound, ErrBookingState.
// Blocks for one commit.
func (b *Bridge) Collect(ctx context.Context, userID, bookingID string) (wire.Booking, error) {
	return b.bookingOp(ctx, userID, bookingID, func(s *station) (change, bool) {
		next, eff, ok := b.m.collect(&s.st, bookingID, b.cfg.Clock())
		return change{next: next, eff: eff}, ok
	})
}

func (b *Bridge) bookingOp(ctx context.Context, userID, bookingID string, op func(s *station) (change, bool)) (wire.Booking, error) {
	bk, err := b.Booking(userID, bookingID)
	if err != nil {
		return bk, err
	}
	s, err := b.station(bk.StationID)
	if err != nil {
		return wire.Booking{}, err
	}
	b.lockStation(s)
	c, ok := op(s)
	if !ok {
		status := bk.Status
		if cur := s.bookings[bookingID]; cur != nil {
			status = cur.Status
		}
		s.mu.Unlock()
		if !activeStatus(status) {
			// Ended: what the log says (the end may still be on its way).
			if got, err := b.Booking(userID, bookingID); err == nil {
				status = got.Status
			}
		}
		return bk, fmt.Errorf("%w: booking %s is %s", ErrBookingState, bookingID, status)
	}
	if err := b.commitWait(ctx, s, &c, b.cfg.Clock()); err != nil {
		return wire.Booking{}, err
	}
	return b.Booking(userID, bookingID)
}

// Notify appends a notification event to the user's channel. Level "" means
// info. ErrBadRequest for an invalid or unknown user, an unknown level, or an
// empty or oversized title/message. Blocks for one commit.
// The contract's bounds of a notification, in bytes (docs/openapi.yaml).
const (
	MaxNotificationTitle   = 200
	MaxNotificationMessage = 4000
)

func (b *Bridge) Notify(ctx context.Context, userID string, n wire.Notification) error {
	if err := wire.CheckID("user id", userID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if n.Level == "" {
		n.Level = wire.LevelInfo
	}
	switch n.Level {
	case wire.LevelInfo, wire.LevelWarning, wire.LevelError:
	default:
		return fmt.Errorf("%w: level must be info, warning or error", ErrBadRequest)
	}
	if n.Title == "" && n.Message == "" {
		return fmt.Errorf("%w: a notification needs a title or a message", ErrBadRequest)
	}
	if len(n.Title) > MaxNotificationTitle || len(n.Message) > MaxNotificationMessage || len(n.BookingID) > 64 {
		return fmt.Errorf("%w: title (%d), message (%d) or booking_id (64) too long", ErrBadRequest, MaxNotificationTitle, MaxNotificationMessage)
	}
	if ok, err := b.cat.UserExists(userID); err != nil {
		return fmt.Errorf("bridge: notify %s: %w", userID, err)
	} else if !ok {
		return fmt.Errorf("no such user %q: %w", userID, ErrUserNotFound)
	}
	fields, err := json.Marshal(&n)
	if err != nil {
		return err
	}
	c := &commitlog.Commit{Events: []commitlog.Event{{Type: wire.TypeNotification, Time: b.cfg.Clock(), UserID: userID, Fields: fields}}}
	ch := make(chan error, 1)
	if err := b.log.Append(c, func(err error) { ch <- err }); err != nil {
		return fmt.Errorf("bridge: notify %s: %w", userID, err)
	}
	if err := wait(ctx, ch); err != nil {
		return fmt.Errorf("bridge: notify %s: %w", userID, err)
	}
	return nil
}

// SetOperatorStatus puts the station into maintenance ("maintenance") or
// back ("online"), publishing station_status and inventory_update, and sends
// the station set_availability. ErrStationNotFound, ErrBadRequest. Blocks
// for one commit.
func (b *Bridge) SetOperatorStatus(ctx context.Context, stationID, status string) error {
	var on bool
	switch status {
	case wire.StationMaintenance:
		on = true
	case wire.StationOnline:
	default:
		return fmt.Errorf(`%w: status must be "maintenance" or "online"`, ErrBadRequest)
	}
	s, err := b.station(stationID)
	if err != nil {
		return err
	}
	b.lockStation(s)
	if s.st.Maintenance == on {
		s.mu.Unlock()
		return nil
	}
	now := b.cfg.Clock()
	next, eff := b.m.setMaintenance(&s.st, on, now)
	avail := !on
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionSetAvailability, Available: &avail})
	return b.commitWait(ctx, s, &change{next: next, eff: eff}, now)
}

// StationProvisioned registers a station the admin API just created (it is
// in the catalogue) and publishes its first inventory_update and
// station_status (offline, all slots empty). Calling it again is harmless.
// ErrStationNotFound if the catalogue does not have it. Blocks for one
// commit.
func (b *Bridge) StationProvisioned(ctx context.Context, sid string) error {
	if err := wire.CheckID("station id", sid); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	s, err := b.station(sid)
	if err != nil {
		return err
	}
	b.lockStation(s)
	_, err = b.log.Record(commitlog.KindStationState, sid)
	if err == nil || !errors.Is(err, commitlog.ErrNotFound) || s.busy() {
		s.mu.Unlock()
		return err // already has a state (or one on its way)
	}
	var eff effects
	eff.event(wire.TypeStationStatus, "", wire.StationStatus{StationID: sid, Status: s.st.Status})
	eff.event(wire.TypeInventoryUpdate, "", wire.InventoryUpdate{StationID: sid, Inventory: s.st.Inv})
	return b.commitWait(ctx, s, &change{next: s.st, eff: eff}, b.cfg.Clock())
}

// StationViews returns every station with its counts, without slots,
// ordered by id.
func (b *Bridge) StationViews() ([]wire.StationView, error) {
	all := b.allStations()
	out := make([]wire.StationView, 0, len(all))
	for _, s := range all {
		b.lockStation(s)
		out = append(out, b.view(s, false))
		s.mu.Unlock()
	}
	return out, nil
}

// StationView returns one station with its slots; ErrStationNotFound.
func (b *Bridge) StationView(stationID string) (wire.StationView, error) {
	s, err := b.station(stationID)
	if err != nil {
		return wire.StationView{}, err
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	return b.view(s, true), nil
}

func (b *Bridge) view(s *station, slots bool) wire.StationView {
	st := &s.st
	v := wire.StationView{
		ID: s.info.ID, Name: s.info.Name, Lat: s.info.Lat, Lon: s.info.Lon,
		Status: statusOf(st), Online: st.Online, LastSeen: st.LastSeen,
		Inventory: b.m.inventory(st),
	}
	if !slots {
		return v
	}
	v.Slots = make([]wire.SlotView, len(st.Slots))
	for i := range st.Slots {
		x := &st.Slots[i]
		sv := wire.SlotView{
			Slot: wire.Slot{
				Slot: i + 1, SoC: x.SoC, SoH: x.SoH, TempC: x.TempC, VoltageV: x.VoltageV,
				Charging: x.Charging, Door: x.Door, Locked: x.Locked, Fault: x.Fault,
			},
			Reserved: x.Res.active(), BookingID: x.Res.BookingID, Swappable: b.m.swappable(st, x),
		}
		if x.BatteryID != "" {
			id := x.BatteryID
			sv.BatteryID = &id
		}
		v.Slots[i] = sv
	}
	return v
}

// InventorySnapshots returns one inventory_update (Snapshot=true) per
// station, or for stationID only when it is not empty (ErrStationNotFound).
func (b *Bridge) InventorySnapshots(stationID string) ([]wire.InventoryUpdate, error) {
	var list []*station
	if stationID == "" {
		list = b.allStations()
	} else {
		s, err := b.station(stationID)
		if err != nil {
			return nil, err
		}
		list = []*station{s}
	}
	out := make([]wire.InventoryUpdate, 0, len(list))
	for _, s := range list {
		b.lockStation(s)
		out = append(out, wire.InventoryUpdate{StationID: s.info.ID, Inventory: b.m.inventory(&s.st), Snapshot: true})
		s.mu.Unlock()
	}
	return out, nil
}
