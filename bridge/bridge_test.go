package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// sink records the commands the bridge sends.
type sink struct{ ch chan sentCmd }

type sentCmd struct {
	sid string
	cmd wire.Command
}

func newSink() *sink { return &sink{ch: make(chan sentCmd, 4096)} }

func (s *sink) SendToStation(sid string, payload []byte) error {
	var c wire.Command
	if err := json.Unmarshal(payload, &c); err != nil {
		return err
	}
	select {
	case s.ch <- sentCmd{sid, c}:
	default:
		return errors.New("sink full")
	}
	return nil
}

// next waits for the next command with the action, skipping others.
func (s *sink) next(t testing.TB, action string) wire.Command {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-s.ch:
			if c.cmd.Action == action {
				return c.cmd
			}
		case <-deadline:
			t.Fatalf("no %s command within 5s", action)
		}
	}
}

const testSecret = "s3cret"

type env struct {
	t     testing.TB
	dir   string
	cfg   Config
	sopts store.Options // the store's options at the next open
	clock *fakeClock
	sink  *sink
	st    *store.Store
	b     *Bridge
}

func newEnv(t testing.TB, slots int) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), clock: &fakeClock{now: time.Now().UTC().Truncate(time.Second)}, sink: newSink()}
	e.cfg = Config{Clock: e.clock.Now, TickInterval: time.Hour, SnapshotInterval: time.Minute}
	e.open()
	if slots > 0 {
		info := store.Station{ID: "S1", Name: "One", Slots: slots, SecretHash: sha256.Sum256([]byte(testSecret))}
		if err := e.st.CreateStation(context.Background(), info); err != nil {
			t.Fatal(err)
		}
		if err := e.b.StationProvisioned(context.Background(), info.ID); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(e.close)
	return e
}

func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(filepath.Join(e.dir, "swapd.db"), e.sopts)
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := New(e.cfg, st, e.sink)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.st, e.b = st, b
}

func (e *env) close() {
	if e.b != nil {
		e.b.Close()
		e.b.Close() // idempotent
	}
	if e.st != nil {
		e.st.Close()
	}
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

func (e *env) publish(kind wire.TopicKind, v any) error {
	e.t.Helper()
	p, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	return publishWait(e.b, "S1", kind, p)
}

// publishWait hands a station message to b as the broker does and waits
// for its done: the error HandlePublish returned, or the one done got.
func publishWait(b *Bridge, sid string, kind wire.TopicKind, payload []byte) error {
	ch := make(chan error, 1)
	if err := b.HandlePublish(sid, kind, payload, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("no done within 30s")
	}
}

func (e *env) mustPublish(kind wire.TopicKind, v any) {
	e.t.Helper()
	if err := e.publish(kind, v); err != nil {
		e.t.Fatalf("publish %s: %v", kind, err)
	}
}

func (e *env) events(ch store.Channel) []store.Event {
	e.t.Helper()
	evs, err := e.st.EventsAfter(ch, 0, 0)
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func evTypes(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i := range evs {
		out[i] = evs[i].Type
	}
	return out
}

// fullOf is a full telemetry where slots 1..ready hold ready batteries
// (soc 91+i) and the rest are empty.
func fullOf(boot string, seq uint64, slots, ready int) *wire.Telemetry {
	t := &wire.Telemetry{BootID: boot, Seq: seq, TS: time.Now().UTC(), Full: true}
	for i := 1; i <= slots; i++ {
		if i <= ready {
			t.Slots = append(t.Slots, slotOf(i, fmt.Sprintf("B%d", i), float64(90+i)))
		} else {
			t.Slots = append(t.Slots, slotOf(i, "", 0))
		}
	}
	return t
}

func TestIngestEventsInLog(t *testing.T) {
	e := newEnv(t, 4)
	e.mustPublish(wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: 4})
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 4, 2))
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, slotOf(3, "B9", 40)))
	// Duplicate: acknowledged, no effect.
	before := e.st.LastSeq()
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, slotOf(3, "", 0)))
	if e.st.LastSeq() != before {
		t.Fatal("a duplicate telemetry appended events")
	}
	evs := e.events(store.Channel{Kind: store.OneStation, ID: "S1"})
	want := []string{
		wire.TypeStationStatus, wire.TypeInventoryUpdate, // provisioned
		wire.TypeStationStatus,                          // status online (no battery known yet)
		wire.TypeInventoryUpdate,                        // first telemetry
		wire.TypeBatteryAdded, wire.TypeInventoryUpdate, // seq 2
	}
	if got := evTypes(evs); !slices.Equal(got, want) {
		t.Fatalf("events = %v\nwant %v", got, want)
	}
	for i := range evs {
		if evs[i].Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, evs[i].Seq)
		}
	}
	var inv wire.InventoryUpdate
	if err := json.Unmarshal(evs[len(evs)-1].Data, &inv); err != nil {
		t.Fatal(err)
	}
	if inv.StationID != "S1" || inv.AvailableBatteries != 2 || inv.ChargingBatteries != 1 || inv.EmptySlots != 1 || inv.TotalSlots != 4 {
		t.Fatalf("last inventory_update %s", evs[len(evs)-1].Data)
	}
	// A gap asks for a snapshot.
	e.mustPublish(wire.KindTelemetry, telem("A", 5, false, slotOf(3, "B9", 41)))
	e.sink.next(t, wire.ActionSnapshot)

	// Bad input is a clear error, never a panic.
	for _, p := range []string{``, `{`, `null`, `{"boot_id":"A","seq":6,"slots":[{"slot":9,"door":"closed"}]}`, `{"boot_id":"A","seq":6,"slots":[{"slot":1,"door":"ajar"}]}`} {
		if err := publishWait(e.b, "S1", wire.KindTelemetry, []byte(p)); !errors.Is(err, wire.ErrBadPayload) {
			t.Fatalf("payload %q: err = %v", p, err)
		}
	}
	if err := publishWait(e.b, "nope", wire.KindTelemetry, []byte(`{}`)); !errors.Is(err, ErrStationNotFound) {
		t.Fatalf("unknown station: %v", err)
	}
	if err := publishWait(e.b, "S1", wire.KindStatus, []byte(`{"online":false}`)); !errors.Is(err, wire.ErrBadPayload) {
		t.Fatalf("status without boot id: %v", err)
	}
}

func TestStoreFailureRejectsPublish(t *testing.T) {
	e := newEnv(t, 4)
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 4, 2))
	e.st.Close()
	err := e.publish(wire.KindTelemetry, telem("A", 2, false, slotOf(4, "B9", 99)))
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("publish with a closed store: err = %v", err)
	}
	v, err := e.b.StationView("S1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Slots[3].BatteryID != nil || v.AvailableBatteries != 2 {
		t.Fatal("the in-memory state changed although the commit failed")
	}
	// The station resends after reconnecting: the same (boot, seq) must
	// apply, not be taken for a duplicate.
	e.st = nil
	e.b.Close()
	e.open()
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, slotOf(4, "B9", 99)))
	if v, _ := e.b.StationView("S1"); v.Slots[3].BatteryID == nil {
		t.Fatal("the resent telemetry was not applied")
	}
}

func TestBookingRace(t *testing.T) {
	e := newEnv(t, 8)
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 8, 5))
	const n = 40
	var wg sync.WaitGroup
	results := make([]wire.Booking, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.b.Book(context.Background(), fmt.Sprintf("u%02d", i), "S1")
		}()
	}
	wg.Wait()
	batteries := map[string]string{}
	for i := range n {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrNoBatteryAvailable) {
				t.Fatalf("booking %d: %v", i, errs[i])
			}
			continue
		}
		if prev, dup := batteries[results[i].BatteryID]; dup {
			t.Fatalf("battery %s booked by %s and %s", results[i].BatteryID, prev, results[i].ID)
		}
		batteries[results[i].BatteryID] = results[i].ID
	}
	if len(batteries) != 5 {
		t.Fatalf("%d bookings, want 5", len(batteries))
	}
	v, _ := e.b.StationView("S1")
	if v.BookedBatteries != 5 || v.AvailableBatteries != 0 {
		t.Fatalf("inventory %+v", v.Inventory)
	}
	// After a restart the same five reservations hold.
	e.reopen()
	v, _ = e.b.StationView("S1")
	if v.BookedBatteries != 5 {
		t.Fatalf("after reopen: inventory %+v", v.Inventory)
	}
	if _, err := e.b.Book(context.Background(), "late", "S1"); !errors.Is(err, ErrNoBatteryAvailable) {
		t.Fatalf("sixth booking after reopen: %v", err)
	}
}

func TestBookingSurvivesRestart(t *testing.T) {
	e := newEnv(t, 4)
	ctx := context.Background()
	e.mustPublish(wire.KindStatus, wire.Status{Online: true, BootID: "A"})
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 4, 2))
	bk, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	if bk.Status != wire.BookingStatusPending || bk.Slot != 2 || bk.BatteryID != "B2" {
		t.Fatalf("booking %+v, want pending on slot 2 (highest soc)", bk)
	}
	reserve := e.sink.next(t, wire.ActionReserve)
	if reserve.BookingID != bk.ID || reserve.Slot != 2 || reserve.ID == "" {
		t.Fatalf("reserve %+v", reserve)
	}

	// Everything closes before the ack; after the restart the reserve is
	// sent again with the same id.
	e.reopen()
	e.b.tick(e.clock.Now())
	again := e.sink.next(t, wire.ActionReserve)
	if again.ID != reserve.ID {
		t.Fatalf("resent reserve id %s, want %s", again.ID, reserve.ID)
	}
	e.mustPublish(wire.KindAck, wire.Ack{ID: reserve.ID, OK: true})
	e.mustPublish(wire.KindAck, wire.Ack{ID: reserve.ID, OK: true}) // repeated ack: no effect
	got, err := e.b.Booking("u1", bk.ID)
	if err != nil || got.Status != wire.BookingStatusReady {
		t.Fatalf("after ack: %+v %v", got, err)
	}
	if !got.ExpiresAt.Equal(e.clock.Now().Add(15 * time.Minute)) {
		t.Fatalf("hold ends %v", got.ExpiresAt)
	}
	userEvs := evTypes(e.events(store.Channel{Kind: store.OneUser, ID: "u1"}))
	if !slices.Equal(userEvs, []string{wire.TypeBookingConfirmed, wire.TypeBookingReady}) {
		t.Fatalf("user events %v", userEvs)
	}
	if _, err := e.b.Booking("u2", bk.ID); !errors.Is(err, ErrBookingNotFound) {
		t.Fatalf("someone else's booking: %v", err)
	}

	// Collect, restart again, then the rider takes the battery.
	if _, err := e.b.Collect(ctx, "u1", bk.ID); err != nil {
		t.Fatal(err)
	}
	unlock := e.sink.next(t, wire.ActionUnlock)
	e.reopen()
	e.mustPublish(wire.KindAck, wire.Ack{ID: unlock.ID, OK: true})
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, slotOf(2, "", 0)))
	got, _ = e.b.Booking("u1", bk.ID)
	if got.Status != wire.BookingStatusCollected {
		t.Fatalf("after removal: %+v", got)
	}
	evs := e.events(store.Channel{Kind: store.OneStation, ID: "S1"})
	last := evs[len(evs)-2]
	if last.Type != wire.TypeBatteryCollected {
		t.Fatalf("events %v", evTypes(evs))
	}
	var bc wire.BatteryBooked
	if err := json.Unmarshal(last.Data, &bc); err != nil || bc.BookingID != bk.ID || bc.BatteryID != "B2" || bc.Slot != 2 {
		t.Fatalf("battery_collected %s", last.Data)
	}
	if _, err := e.b.Cancel(ctx, "u1", bk.ID); !errors.Is(err, ErrBookingState) {
		t.Fatalf("cancel of a collected booking: %v", err)
	}
	list, err := e.b.UserBookings("u1")
	if err != nil || len(list) != 1 || list[0].ID != bk.ID {
		t.Fatalf("user bookings %+v %v", list, err)
	}
}

func TestAckNeverComes(t *testing.T) {
	e := newEnv(t, 4)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 4, 1))
	bk, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	first := e.sink.next(t, wire.ActionReserve)
	// Retries with backoff: 2s, then 4s.
	e.b.tick(e.clock.Advance(time.Second))
	select {
	case c := <-e.sink.ch:
		t.Fatalf("resent too early: %+v", c)
	default:
	}
	e.b.tick(e.clock.Advance(time.Second))
	if c := e.sink.next(t, wire.ActionReserve); c.ID != first.ID {
		t.Fatal("retry with a new id")
	}
	// The station keeps talking, but never acks.
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false))
	e.b.tick(e.clock.Advance(2 * time.Minute))
	got, _ := e.b.Booking("u1", bk.ID)
	if got.Status != wire.BookingStatusFailed {
		t.Fatalf("booking %+v", got)
	}
	e.sink.next(t, wire.ActionRelease)
	userEvs := e.events(store.Channel{Kind: store.OneUser, ID: "u1"})
	if len(userEvs) != 1 || userEvs[0].Type != wire.TypeNotification {
		t.Fatalf("user events %v", evTypes(userEvs))
	}
	// The late ack is harmless.
	e.mustPublish(wire.KindAck, wire.Ack{ID: first.ID, OK: true})
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusFailed {
		t.Fatal("a late ack revived the booking")
	}
	if v, _ := e.b.StationView("S1"); v.AvailableBatteries != 1 {
		t.Fatalf("battery not back: %+v", v.Inventory)
	}
}

func TestHoldExpiryAndLivenessAfterRestart(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 2, 2))
	bk, _ := e.b.Book(ctx, "u1", "S1")
	e.mustPublish(wire.KindAck, wire.Ack{ID: e.sink.next(t, wire.ActionReserve).ID, OK: true})
	e.reopen()
	// The station stays quiet for 3 snapshot intervals: offline.
	e.b.tick(e.clock.Advance(3 * time.Minute))
	if v, _ := e.b.StationView("S1"); v.Online || v.Status != wire.StationOffline {
		t.Fatalf("station %+v", v)
	}
	// It comes back; the hold ends 15 minutes after ready.
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false))
	e.reopen()
	e.b.tick(e.clock.Advance(12 * time.Minute))
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusExpired {
		t.Fatalf("booking %+v", got)
	}
	e.sink.next(t, wire.ActionRelease)
	uev := e.events(store.Channel{Kind: store.OneUser, ID: "u1"})
	if uev[len(uev)-1].Type != wire.TypeNotification {
		t.Fatalf("user events %v", evTypes(uev))
	}
}

func TestOperatorStatusAndNotify(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 2, 2))
	if err := e.b.SetOperatorStatus(ctx, "S1", "maintenance"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.b.Book(ctx, "u1", "S1"); !errors.Is(err, ErrNoBatteryAvailable) {
		t.Fatalf("booking in maintenance: %v", err)
	}
	c := e.sink.next(t, wire.ActionSetAvailability)
	if c.Available == nil || *c.Available {
		t.Fatalf("set_availability %+v", c)
	}
	evs := e.events(store.Channel{Kind: store.OneStation, ID: "S1"})
	var ss wire.StationStatus
	_ = json.Unmarshal(evs[len(evs)-2].Data, &ss)
	if ss.Status != wire.StationMaintenance {
		t.Fatalf("events %v, status %+v", evTypes(evs), ss)
	}
	if err := e.b.SetOperatorStatus(ctx, "S1", "bogus"); !errors.Is(err, ErrBadRequest) {
		t.Fatal(err)
	}
	if err := e.b.SetOperatorStatus(ctx, "S9", "online"); !errors.Is(err, ErrStationNotFound) {
		t.Fatal(err)
	}
	if err := e.b.SetOperatorStatus(ctx, "S1", "online"); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.b.StationView("S1"); v.Status != wire.StationOnline || v.AvailableBatteries != 2 {
		t.Fatalf("%+v", v)
	}

	if err := e.st.CreateUser(ctx, store.User{ID: "u1", TokenHash: sha256.Sum256([]byte("tok"))}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Notify(ctx, "u1", wire.Notification{Title: "Hi", Message: "hello", Level: "info"}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Notify(ctx, "u2", wire.Notification{Title: "Hi"}); !errors.Is(err, ErrUserNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := e.b.Notify(ctx, "u1", wire.Notification{Title: strings.Repeat("x", MaxNotificationTitle+1)}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("title over the contract's 200 bytes: %v", err)
	}
	if err := e.b.Notify(ctx, "u1", wire.Notification{Title: "Hi", Level: "loud"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bad level: %v", err)
	}
	uev := e.events(store.Channel{Kind: store.OneUser, ID: "u1"})
	if len(uev) != 1 || string(uev[0].Data[len(uev[0].Data)-len(`"level":"info"}`):]) != `"level":"info"}` {
		t.Fatalf("user events %v", evTypes(uev))
	}

	snaps, err := e.b.InventorySnapshots("")
	if err != nil || len(snaps) != 1 || !snaps[0].Snapshot || snaps[0].AvailableBatteries != 2 {
		t.Fatalf("snapshots %+v %v", snaps, err)
	}
	if _, err := e.b.InventorySnapshots("S9"); !errors.Is(err, ErrStationNotFound) {
		t.Fatal(err)
	}
	if !e.b.StationExists("S1") || e.b.StationExists("S9") {
		t.Fatal("StationExists")
	}
	views, _ := e.b.StationViews()
	if len(views) != 1 || views[0].Slots != nil || views[0].Name != "One" {
		t.Fatalf("views %+v", views)
	}
}

func TestCancelStopsReserveRetries(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 2, 1))
	bk, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	reserve := e.sink.next(t, wire.ActionReserve)
	e.clock.Advance(time.Millisecond) // the release's id sorts after the reserve's
	got, err := e.b.Cancel(ctx, "u1", bk.ID)
	if err != nil || got.Status != wire.BookingStatusCancelled {
		t.Fatalf("cancel: %+v %v", got, err)
	}
	release := e.sink.next(t, wire.ActionRelease)
	if release.BookingID != bk.ID || release.Slot != bk.Slot {
		t.Fatalf("release %+v", release)
	}
	// Retries continue for the release only, also after a restart.
	e.reopen()
	e.b.tick(e.clock.Advance(time.Minute))
	// Commands are queued in id order, so a resent reserve would come first.
	select {
	case c := <-e.sink.ch:
		if c.cmd.ID != release.ID {
			t.Fatalf("resent after cancel: %+v, want the release", c.cmd)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("release not resent")
	}
	select {
	case c := <-e.sink.ch:
		t.Fatalf("unexpected command after cancel: %+v", c)
	default:
	}
	// The reserve's late ack changes nothing; the battery is available.
	e.mustPublish(wire.KindAck, wire.Ack{ID: reserve.ID, OK: true})
	if v, _ := e.b.StationView("S1"); v.AvailableBatteries != 1 || v.BookedBatteries != 0 {
		t.Fatalf("inventory %+v", v.Inventory)
	}
	if _, err := e.b.Cancel(ctx, "u1", bk.ID); !errors.Is(err, ErrBookingState) {
		t.Fatalf("second cancel: %v", err)
	}
	if _, err := e.b.Cancel(ctx, "u2", bk.ID); !errors.Is(err, ErrBookingNotFound) {
		t.Fatalf("cancel by someone else: %v", err)
	}
}

func TestCommandRecordsPersistedAndPurged(t *testing.T) {
	e := newEnv(t, 2)
	ctx := context.Background()
	e.mustPublish(wire.KindTelemetry, fullOf("A", 1, 2, 2))
	bk1, _ := e.b.Book(ctx, "u1", "S1")
	r1 := e.sink.next(t, wire.ActionReserve)
	e.clock.Advance(time.Millisecond)
	bk2, _ := e.b.Book(ctx, "u2", "S1")
	e.sink.next(t, wire.ActionReserve)
	e.mustPublish(wire.KindAck, wire.Ack{ID: r1.ID, OK: true})
	states := func() map[string]cmdState {
		out := map[string]cmdState{}
		err := e.st.View(func(tx *store.Tx) error {
			return tx.Scan(store.KindCommand, "", func(k string, v []byte) bool {
				c, err := decodeCommand(v)
				if err != nil {
					t.Fatal(err)
				}
				out[c.Cmd.BookingID] = c.State
				return true
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The sender marks a command sent right after delivering it; Close waits
	// for the sender, so the mark is stored once Close returns.
	e.b.Close()
	if got := states(); got[bk2.ID] != cmdSent {
		t.Fatalf("states %v", got)
	}
	if got := states(); got[bk1.ID] != cmdAcked {
		t.Fatalf("states %v", got)
	}
	if err := e.b.purgeCommands(ctx, e.clock.Advance(25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got := states()
	if _, ok := got[bk1.ID]; ok || got[bk2.ID] != cmdSent {
		t.Fatalf("after purge %v", got)
	}
}

// addStation provisions another station with slots slots.
func (e *env) addStation(id string, slots int) {
	e.t.Helper()
	info := store.Station{ID: id, Name: id, Slots: slots, SecretHash: sha256.Sum256([]byte(testSecret))}
	if err := e.st.CreateStation(context.Background(), info); err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.StationProvisioned(context.Background(), id); err != nil {
		e.t.Fatal(err)
	}
}

// online brings sid online with boot "A" and a full report (seq 1) of
// slots slots, the first ready of them holding batteries.
func (e *env) online(sid string, slots, ready int) {
	e.t.Helper()
	for _, m := range []struct {
		kind wire.TopicKind
		v    any
	}{{wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: slots}}, {wire.KindTelemetry, fullOf("A", 1, slots, ready)}} {
		p, _ := json.Marshal(m.v)
		if err := publishWait(e.b, sid, m.kind, p); err != nil {
			e.t.Fatalf("%s %s: %v", sid, m.kind, err)
		}
	}
}
