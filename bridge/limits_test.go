package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Control characters in the strings a station reports (battery ids,
// faults, boot ids, an ack's error) would reach operators' terminals and
// users' notifications verbatim: such a message is a bad payload and
// changes nothing.
func TestControlCharactersRejected(t *testing.T) {
	e := newEnv(t, 4)
	e.mustPublish(wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: 4})
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 4, 2))
	beforeSeq := e.st.LastSeq()
	beforeView, err := e.b.StationView("S1")
	if err != nil {
		t.Fatal(err)
	}
	slot := func(field, value string) string {
		s := `{"slot":3,"battery_id":"B3","soc":95,"soh":97,"temp_c":30,"voltage_v":52,"charging":false,"door":"closed","locked":true,"fault":""`
		return `{"boot_id":"A","seq":2,"slots":[` + s + `,"` + field + `":` + value + `}]}`
	}
	cases := []struct {
		name    string
		kind    wire.TopicKind
		payload string
	}{
		{"battery_id terminal escapes", wire.KindTelemetry, slot("battery_id", `"\u001b[2J\u001b]0;OWNED\u0007"`)},
		{"battery_id newline", wire.KindTelemetry, slot("battery_id", `"B3\nB4"`)},
		{"battery_id NUL", wire.KindTelemetry, slot("battery_id", `"B\u0000"`)},
		{"battery_id DEL", wire.KindTelemetry, slot("battery_id", "\"B\x7f\"")},
		{"battery_id C1 CSI", wire.KindTelemetry, slot("battery_id", "\"B\xc2\x9b2J\"")},
		{"fault escape", wire.KindTelemetry, slot("fault", `"\u001b[31movertemp"`)},
		{"fault carriage return", wire.KindTelemetry, slot("fault", `"ok\rOWNED"`)},
		{"boot_id escape", wire.KindTelemetry, `{"boot_id":"A\u001b","seq":1,"full":true,"slots":[]}`},
		{"status boot_id escape", wire.KindStatus, `{"online":true,"boot_id":"Z\u001b[2J"}`},
		{"ack error escape", wire.KindAck, `{"id":"c1","ok":false,"error":"\u001b]0;OWNED\u0007"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := publishWait(e.b, "S1", c.kind, []byte(c.payload))
			if !errors.Is(err, wire.ErrBadPayload) {
				t.Fatalf("err = %v, want a bad payload", err)
			}
			if e.st.LastSeq() != beforeSeq {
				t.Fatalf("the log grew from %d to %d", beforeSeq, e.st.LastSeq())
			}
			v, err := e.b.StationView("S1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(v, beforeView) {
				t.Fatalf("the station changed:\n%+v\nwant %+v", v, beforeView)
			}
		})
	}
	// Printable text, UTF-8 included, is still fine.
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, wire.Slot{Slot: 3, BatteryID: ptr("B-é-3"), SoC: 40, SoH: 97, Door: wire.DoorClosed, Locked: true, Fault: "überhitzt ±5°"}))
	if e.st.LastSeq() == beforeSeq {
		t.Fatal("a clean telemetry after the refused ones was not applied")
	}
}

func ptr[T any](v T) *T { return &v }

// activeOf returns the user's stored bookings that are pending, confirmed
// or ready.
func (e *env) activeOf(uid string) []wire.Booking {
	e.t.Helper()
	list, err := e.b.UserBookings(uid)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []wire.Booking
	for _, bk := range list {
		if activeStatus(bk.Status) {
			out = append(out, bk)
		}
	}
	return out
}

// One user racing 40 bookings over five stations (different station
// mutexes) ends with exactly MaxActiveBookings (default 2); the rest are
// ErrBookingLimit. Every way a booking ends gives its place back, the
// limit holds across a restart, and an ending the bridge did not commit
// itself cannot keep the user locked out.
func TestBookingLimit(t *testing.T) {
	e := newEnv(t, 8)
	ctx := context.Background()
	e.online("S1", 8, 8)
	for i := 2; i <= 5; i++ {
		sid := fmt.Sprintf("S%d", i)
		e.addStation(sid, 8)
		e.online(sid, 8, 8)
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, errs[i] = e.b.Book(ctx, "greedy", fmt.Sprintf("S%d", i%5+1))
		}()
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrBookingLimit):
			t.Fatalf("booking %d: %v", i, err)
		}
	}
	active := e.activeOf("greedy")
	if ok != 2 || len(active) != 2 {
		t.Fatalf("%d bookings answered, %d active in the store; want 2 and 2", ok, len(active))
	}
	booked := 0
	for i := 1; i <= 5; i++ {
		v, _ := e.b.StationView(fmt.Sprintf("S%d", i))
		booked += v.BookedBatteries
	}
	if booked != 2 {
		t.Fatalf("%d batteries booked over the stations, want 2", booked)
	}
	// Another user is not affected.
	if _, err := e.b.Book(ctx, "other", "S1"); err != nil {
		t.Fatalf("another user: %v", err)
	}

	// The limit holds across a restart (rebuilt from the stored state).
	e.reopen()
	if _, err := e.b.Book(ctx, "greedy", "S3"); !errors.Is(err, ErrBookingLimit) {
		t.Fatalf("third booking after a restart: %v", err)
	}

	// Each way out gives the place back: cancel, a refused reserve
	// (failed), expiry, collection.
	rebook := func(why string) wire.Booking {
		t.Helper()
		bk, err := e.b.Book(ctx, "greedy", "S4")
		if err != nil {
			t.Fatalf("booking after %s: %v", why, err)
		}
		if _, err := e.b.Book(ctx, "greedy", "S4"); !errors.Is(err, ErrBookingLimit) {
			t.Fatalf("over the limit after %s: %v", why, err)
		}
		return bk
	}
	if _, err := e.b.Cancel(ctx, "greedy", active[0].ID); err != nil {
		t.Fatal(err)
	}
	bk := rebook("a cancel")

	// Refused by the station.
	for {
		c := e.sink.next(t, wire.ActionReserve)
		if c.BookingID == bk.ID {
			p := fmt.Appendf(nil, `{"id":%q,"ok":false,"error":"slot jammed"}`, c.ID)
			if err := publishWait(e.b, "S4", wire.KindAck, p); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if got, _ := e.b.Booking("greedy", bk.ID); got.Status != wire.BookingStatusFailed {
		t.Fatalf("refused booking is %s", got.Status)
	}
	bk = rebook("a refused reserve")

	// Expiry: nothing is acknowledged within the charge wait; the tick
	// fails or expires every pending booking.
	e.b.tick(e.clock.Advance(2 * time.Hour))
	if a := e.activeOf("greedy"); len(a) != 0 {
		t.Fatalf("active after the deadlines: %+v", a)
	}
	for i := 1; i <= 5; i++ {
		e.online(fmt.Sprintf("S%d", i), 8, 8) // a new boot: back online after the long silence
	}
	if _, err := e.b.Book(ctx, "greedy", "S2"); err != nil {
		t.Fatalf("booking after expiry: %v", err)
	}
	rebook("expiry")
	bk = e.activeOf("greedy")[0]

	// Collection: confirmed, ready, unlocked, taken.
	for {
		c := e.sink.next(t, wire.ActionReserve)
		if c.BookingID == bk.ID {
			p := fmt.Appendf(nil, `{"id":%q,"ok":true}`, c.ID)
			if err := publishWait(e.b, bk.StationID, wire.KindAck, p); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if _, err := e.b.Collect(ctx, "greedy", bk.ID); err != nil {
		t.Fatal(err)
	}
	p := fmt.Appendf(nil, `{"boot_id":"A","seq":50,"slots":[{"slot":%d,"battery_id":null,"door":"closed","locked":true}]}`, bk.Slot)
	if err := publishWait(e.b, bk.StationID, wire.KindTelemetry, p); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.b.Booking("greedy", bk.ID); got.Status != wire.BookingStatusCollected {
		t.Fatalf("collected booking is %s", got.Status)
	}
	rebook("a collection")

	// A booking record ended outside the bridge's commits (say, by an
	// operator's tool) no longer counts once the user is at the limit.
	for _, a := range e.activeOf("greedy") {
		_, err := e.st.Update(ctx, func(tx *store.Tx) error {
			ended := a
			ended.Status, ended.Reason = wire.BookingStatusCancelled, "test"
			raw, err := json.Marshal(&ended)
			if err != nil {
				return err
			}
			return tx.Put(store.KindBooking, a.ID, raw)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.b.Book(ctx, "greedy", "S5"); err != nil {
		t.Fatalf("booking after records were ended elsewhere: %v", err)
	}
}

// A negative MaxActiveBookings turns the limit off.
func TestBookingLimitOff(t *testing.T) {
	e := newEnv(t, 0)
	e.cfg.MaxActiveBookings = -1
	e.reopen()
	e.addStation("S1", 8)
	e.online("S1", 8, 8)
	for i := range 5 {
		if _, err := e.b.Book(context.Background(), "fleet", "S1"); err != nil {
			t.Fatalf("booking %d: %v", i, err)
		}
	}
}
