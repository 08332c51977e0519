package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/swapbridge/swapbridge/store"
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
// one store commit.
func (b *Bridge) Book(ctx context.Context, userID, stationID string) (wire.Booking, error) {
	if err := wire.CheckID("user id", userID); err != nil {
		return wire.Booking{}, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	s, err := b.station(stationID)
	if err != nil {
		return wire.Booking{}, err
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	if b.closed() {
		return wire.Booking{}, ErrClosed
	}
	i := b.m.pick(&s.st)
	if i < 0 {
		return wire.Booking{}, fmt.Errorf("%w at station %s", ErrNoBatteryAvailable, stationID)
	}
	now := b.cfg.Clock()
	id := newID("bk", now)
	ok, err := b.active.reserve(b.store, userID, id)
	if err != nil {
		return wire.Booking{}, fmt.Errorf("bridge: bookings of %s: %w", userID, err)
	}
	if !ok {
		return wire.Booking{}, fmt.Errorf("%w: %s holds %d active bookings", ErrBookingLimit, userID, b.active.limit)
	}
	next, eff := b.m.book(&s.st, i, id, userID, now)
	res := next.Slots[i].Res
	bk := wire.Booking{
		ID: id, UserID: userID, StationID: stationID, Slot: i + 1, BatteryID: res.BatteryID,
		Status: wire.BookingStatusPending, CreatedAt: now.UTC(), ExpiresAt: res.ExpiresAt.UTC(),
	}
	raw, err := json.Marshal(&bk)
	if err != nil {
		b.active.release(id)
		return wire.Booking{}, err
	}
	c := &change{next: next, eff: eff, extra: func(tx *store.Tx) error {
		if err := tx.Put(store.KindBooking, id, raw); err != nil {
			return err
		}
		return tx.Put(store.KindUserBooking, userID+"/"+id, []byte{'1'})
	}}
	if err := b.commit(ctx, s, c, now); err != nil {
		b.active.release(id)
		return wire.Booking{}, err
	}
	b.active.committed(userID, id)
	return bk, nil
}

// Booking returns the user's booking; ErrBookingNotFound also for someone
// else's.
func (b *Bridge) Booking(userID, bookingID string) (wire.Booking, error) {
	var bk wire.Booking
	err := b.store.View(func(tx *store.Tx) error {
		var err error
		bk, err = getBooking(tx, bookingID)
		return err
	})
	if err != nil {
		return wire.Booking{}, err
	}
	if bk.UserID != userID {
		return wire.Booking{}, fmt.Errorf("%w: %s", ErrBookingNotFound, bookingID)
	}
	return bk, nil
}

func getBooking(tx *store.Tx, id string) (wire.Booking, error) {
	var bk wire.Booking
	if id == "" || len(id) > 64 {
		return bk, fmt.Errorf("%w: %q", ErrBookingNotFound, id)
	}
	raw, err := tx.Get(store.KindBooking, id)
	if errors.Is(err, store.ErrNotFound) {
		return bk, fmt.Errorf("%w: %s", ErrBookingNotFound, id)
	}
	if err != nil {
		return bk, fmt.Errorf("bridge: booking %s: %w", id, err)
	}
	if err := json.Unmarshal(raw, &bk); err != nil {
		return bk, fmt.Errorf("bridge: booking %s: decode: %w", id, err)
	}
	return bk, nil
}

// UserBookings returns the user's bookings, newest first.
func (b *Bridge) UserBookings(userID string) ([]wire.Booking, error) {
	if err := wire.CheckID("user id", userID); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	var out []wire.Booking
	err := b.store.View(func(tx *store.Tx) error {
		var ids []string
		prefix := userID + "/"
		if err := tx.Scan(store.KindUserBooking, prefix, func(key string, _ []byte) bool {
			ids = append(ids, strings.TrimPrefix(key, prefix))
			return true
		}); err != nil {
			return err
		}
		for _, id := range ids {
			bk, err := getBooking(tx, id)
			if errors.Is(err, ErrBookingNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			out = append(out, bk)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: bookings of %s: %w", userID, err)
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
// collected, cancelled, expired or failed). Blocks for one store commit.
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
// Blocks for one store commit.
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
		s.mu.Unlock()
		bk, _ = b.Booking(userID, bookingID)
		return bk, fmt.Errorf("%w: booking %s is %s", ErrBookingState, bookingID, bk.Status)
	}
	err = b.commit(ctx, s, &c, b.cfg.Clock())
	s.mu.Unlock()
	if err != nil {
		return wire.Booking{}, err
	}
	return b.Booking(userID, bookingID)
}

// Notify appends a notification event to the user's channel. Level "" means
// info. ErrBadRequest for an invalid or unknown user, an unknown level, or an
// empty or oversized title/message. Blocks for one store commit.
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
	if len(n.Title) > 256 || len(n.Message) > 4096 || len(n.BookingID) > 64 {
		return fmt.Errorf("%w: title (256) or message (4096) too long", ErrBadRequest)
	}
	if _, err := b.store.User(userID); errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: unknown user %s", ErrBadRequest, userID)
	} else if err != nil {
		return fmt.Errorf("bridge: notify %s: %w", userID, err)
	}
	fields, err := json.Marshal(&n)
	if err != nil {
		return err
	}
	now := b.cfg.Clock()
	_, err = b.store.Update(ctx, func(tx *store.Tx) error {
		return tx.Append(&store.Event{Type: wire.TypeNotification, Time: now, UserID: userID, Fields: fields})
	})
	if err != nil {
		return fmt.Errorf("bridge: notify %s: %w", userID, err)
	}
	return nil
}

// SetOperatorStatus puts the station into maintenance ("maintenance") or
// back ("online"), publishing station_status and inventory_update, and sends
// the station set_availability. ErrStationNotFound, ErrBadRequest. Blocks
// for one store commit.
func (b *Bridge) SetOperatorStatus(ctx context.Context, stationID, status string) error {
	var on bool
	switch status {
	case wire.StationMaintenance:
		on = true
	case wire.StationOnline:
	default:
		return fmt.Errorf("%w: status must be maintenance or online", ErrBadRequest)
	}
	s, err := b.station(stationID)
	if err != nil {
		return err
	}
	b.lockStation(s)
	defer s.mu.Unlock()
	if s.st.Maintenance == on {
		return nil
	}
	now := b.cfg.Clock()
	next, eff := b.m.setMaintenance(&s.st, on, now)
	avail := !on
	eff.Commands = append(eff.Commands, wire.Command{Action: wire.ActionSetAvailability, Available: &avail})
	return b.commit(ctx, s, &change{next: next, eff: eff}, now)
}

// StationProvisioned registers a station the admin API just created and
// publishes its first inventory_update and station_status (offline, all
// slots empty). Calling it again is harmless. Blocks for one store commit.
func (b *Bridge) StationProvisioned(ctx context.Context, st store.Station) error {
	if err := wire.CheckID("station id", st.ID); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if st.Slots < 1 || st.Slots > wire.MaxSlots {
		return fmt.Errorf("%w: slots must be 1..%d", ErrBadRequest, wire.MaxSlots)
	}
	s := b.addStation(st)
	b.lockStation(s)
	defer s.mu.Unlock()
	exists := false
	err := b.store.View(func(tx *store.Tx) error {
		_, err := tx.Get(store.KindStationState, st.ID)
		if err == nil {
			exists = true
			return nil
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil || exists {
		return err
	}
	var eff effects
	eff.event(wire.TypeStationStatus, "", wire.StationStatus{StationID: st.ID, Status: s.st.Status})
	eff.event(wire.TypeInventoryUpdate, "", wire.InventoryUpdate{StationID: st.ID, Inventory: s.st.Inv})
	return b.commit(ctx, s, &change{next: s.st, eff: eff}, b.cfg.Clock())
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
