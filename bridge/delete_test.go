package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Deleting a station fails its active bookings with a notification to each
// user, removes it from every view and from the store (also after a
// restart), keeps its past events, and sends it nothing more.
func TestDeleteStation(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 3, 3))
	var bks []wire.Booking
	for _, u := range []string{"u1", "u2"} {
		bk, err := e.b.Book(ctx, u, "S1")
		if err != nil {
			t.Fatal(err)
		}
		bks = append(bks, bk)
		e.sink.next(t, wire.ActionReserve)
	}
	stationEvents := len(e.events(store.Channel{Kind: store.OneStation, ID: "S1"}))

	if err := e.b.DeleteStation(ctx, "S1"); err != nil {
		t.Fatal(err)
	}
	for _, bk := range bks {
		got, err := e.b.Booking(bk.UserID, bk.ID)
		if err != nil || got.Status != wire.BookingStatusFailed {
			t.Errorf("booking of %s: %+v %v, want failed", bk.UserID, got, err)
		}
		evs := e.events(store.Channel{Kind: store.OneUser, ID: bk.UserID})
		last := evs[len(evs)-1]
		var n wire.Notification
		if err := json.Unmarshal(last.Data, &n); err != nil || last.Type != wire.TypeNotification || n.BookingID != bk.ID || n.Level != wire.LevelWarning {
			t.Errorf("%s's last event %s, want a notification of the failed booking", bk.UserID, last.Data)
		}
	}
	if n := len(e.events(store.Channel{Kind: store.OneStation, ID: "S1"})); n != stationEvents {
		t.Errorf("station events %d after the delete, want the %d from before", n, stationEvents)
	}
	if _, err := e.b.StationView("S1"); !errors.Is(err, ErrStationNotFound) {
		t.Errorf("StationView: %v", err)
	}
	if e.b.StationExists("S1") {
		t.Error("StationExists after the delete")
	}
	if views, _ := e.b.StationViews(); len(views) != 0 {
		t.Errorf("StationViews: %+v", views)
	}
	if _, err := e.st.Station("S1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("store still has the station: %v", err)
	}
	if _, err := e.b.Book(ctx, "u3", "S1"); !errors.Is(err, ErrStationNotFound) {
		t.Errorf("Book: %v", err)
	}
	if err := e.publish(wire.KindTelemetry, fullOf("A", 2, 3, 3)); err == nil {
		t.Error("a telemetry of the deleted station was accepted")
	}
	if err := e.b.DeleteStation(ctx, "S1"); !errors.Is(err, ErrStationNotFound) {
		t.Errorf("second delete: %v", err)
	}
	select {
	case c := <-e.sink.ch:
		t.Errorf("command sent to the deleted station: %+v", c.cmd)
	default:
	}
	err := e.st.View(func(tx *store.Tx) error {
		if _, err := tx.Get(store.KindStationState, "S1"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("state record: %v", err)
		}
		return tx.Scan(store.KindCommand, "", func(key string, value []byte) bool {
			if c, err := decodeCommand(value); err == nil && c.StationID == "S1" {
				t.Errorf("command record %s left", key)
			}
			return true
		})
	})
	if err != nil {
		t.Fatal(err)
	}

	e.reopen()
	if e.b.StationExists("S1") {
		t.Error("the deleted station is back after a restart")
	}
	if got, _ := e.b.Booking("u1", bks[0].ID); got.Status != wire.BookingStatusFailed {
		t.Errorf("after a restart the booking is %s", got.Status)
	}
}

// CancelUserBookings cancels the user's active bookings through Cancel
// (slots released, release sent) and no one else's.
func TestCancelUserBookings(t *testing.T) {
	e := newEnv(t, 3)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 3, 3))
	mine, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	e.sink.next(t, wire.ActionReserve)
	other, err := e.b.Book(ctx, "u2", "S1")
	if err != nil {
		t.Fatal(err)
	}
	e.sink.next(t, wire.ActionReserve)

	n, err := e.b.CancelUserBookings(ctx, "u1")
	if err != nil || n != 1 {
		t.Fatalf("CancelUserBookings: %d %v, want 1", n, err)
	}
	if rel := e.sink.next(t, wire.ActionRelease); rel.BookingID != mine.ID {
		t.Errorf("release %+v, want the one of %s", rel, mine.ID)
	}
	if got, _ := e.b.Booking("u1", mine.ID); got.Status != wire.BookingStatusCancelled {
		t.Errorf("u1's booking is %s", got.Status)
	}
	if got, _ := e.b.Booking("u2", other.ID); got.Status != wire.BookingStatusPending {
		t.Errorf("u2's booking is %s", got.Status)
	}
	if v, _ := e.b.StationView("S1"); v.BookedBatteries != 1 {
		t.Errorf("booked %d, want 1", v.BookedBatteries)
	}
	if n, err := e.b.CancelUserBookings(ctx, "u1"); err != nil || n != 0 {
		t.Errorf("again: %d %v, want 0", n, err)
	}
}
