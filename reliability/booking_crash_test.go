package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// ackingStation is a test station that reports its slots and answers
// commands (or not) from a goroutine of its own.
type ackingStation struct {
	*rawStation
	cmds chan wire.Command
	done chan struct{}
}

func startAckingStation(t *testing.T, addr, sid, secret, boot string, seq uint64, slots int, ack bool) *ackingStation {
	t.Helper()
	cmds := make(chan wire.Command, 64)
	s, err := dialStation(addr, sid, secret, func(c wire.Command) {
		select {
		case cmds <- c:
		default:
		}
	})
	if err != nil {
		t.Fatalf("station %s: %v", sid, err)
	}
	st, _ := json.Marshal(wire.Status{Online: true, BootID: boot, TS: time.Now().UTC(), Slots: slots})
	if err := s.publish(wire.KindStatus, st, true); err != nil {
		t.Fatalf("station %s status: %v", sid, err)
	}
	tel := wire.Telemetry{BootID: boot, Seq: seq, TS: time.Now().UTC(), Full: true}
	for i := 1; i <= slots; i++ {
		b := "B-" + sid + "-" + string(rune('0'+i))
		tel.Slots = append(tel.Slots, wire.Slot{Slot: i, BatteryID: &b, SoC: 95, SoH: 95, TempC: 25, VoltageV: 52, Door: wire.DoorClosed, Locked: true})
	}
	body, _ := json.Marshal(tel)
	if err := s.publish(wire.KindTelemetry, body, false); err != nil {
		t.Fatalf("station %s telemetry: %v", sid, err)
	}
	a := &ackingStation{rawStation: s, cmds: make(chan wire.Command, 64), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for c := range cmds {
			a.cmds <- c
			if !ack {
				continue
			}
			b, _ := json.Marshal(wire.Ack{ID: c.ID, OK: true})
			if s.publish(wire.KindAck, b, false) != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { s.close() })
	return a
}

// nextCmd waits for the station's next command with the action.
func (a *ackingStation) nextCmd(t *testing.T, action string) wire.Command {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case c := <-a.cmds:
			if c.Action == action {
				return c
			}
		case <-deadline:
			t.Fatalf("station %s: no %s command within 15s", a.sid, action)
		}
	}
}

// TestCrashMidBooking SIGKILLs swapd while two bookings wait for their
// station's reserve ack. After the restart one station never answers (its
// booking must fail when the command times out) and the other answers (its
// booking must become ready, then expire after the short hold). Neither
// battery stays held.
func TestCrashMidBooking(t *testing.T) {
	t.Parallel() // waits on timers and reconnects more than it computes
	const slots = 4
	env := []string{"SWAPD_BOOKING_HOLD=2s", "SWAPD_COMMAND_RETRY=200ms", "SWAPD_COMMAND_TIMEOUT=6s"}
	dir := t.TempDir()
	p := startSwapd(t, dir, env...)
	secrets := provision(t, p.admin(), slots, "BK-silent", "BK-acking")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	u, err := p.admin().CreateUser(ctx, "rider-1")
	if err != nil {
		t.Fatal(err)
	}

	// Both stations report but do not acknowledge anything yet.
	silent := startAckingStation(t, p.mqtt, "BK-silent", secrets["BK-silent"], "boot-s", 1, slots, false)
	mute := startAckingStation(t, p.mqtt, "BK-acking", secrets["BK-acking"], "boot-a", 1, slots, false)
	user := client.New(p.http, u.Token)
	waitAvailable(t, user, "BK-silent", slots)
	waitAvailable(t, user, "BK-acking", slots)
	b1, err := user.Book(ctx, "BK-silent")
	if err != nil {
		t.Fatalf("book at BK-silent: %v", err)
	}
	b2, err := user.Book(ctx, "BK-acking")
	if err != nil {
		t.Fatalf("book at BK-acking: %v", err)
	}
	silent.nextCmd(t, wire.ActionReserve)
	mute.nextCmd(t, wire.ActionReserve)
	p.kill() // both bookings are pending: reserve sent, not acknowledged
	silent.close()
	mute.close()

	p2 := startSwapd(t, dir, env...)
	user = client.New(p2.http, u.Token)
	for _, b := range []wire.Booking{b1, b2} {
		got, err := user.Booking(ctx, b.ID)
		if err != nil || got.Status != wire.BookingStatusPending {
			t.Fatalf("booking %s after the restart: %+v %v; want it still pending", b.ID, got, err)
		}
	}
	silent = startAckingStation(t, p2.mqtt, "BK-silent", secrets["BK-silent"], "boot-s", 2, slots, false)
	acking := startAckingStation(t, p2.mqtt, "BK-acking", secrets["BK-acking"], "boot-a", 2, slots, true)

	// The answering station: the pending reserve is resent, acknowledged,
	// the booking becomes ready, the hold ends and the slot is released.
	r := acking.nextCmd(t, wire.ActionReserve)
	if r.BookingID != b2.ID {
		t.Errorf("resent reserve for booking %q, want %q", r.BookingID, b2.ID)
	}
	waitStatus(t, user, b2.ID, wire.BookingStatusExpired)
	rel := acking.nextCmd(t, wire.ActionRelease)
	if rel.Slot != b2.Slot {
		t.Errorf("release of slot %d, want %d", rel.Slot, b2.Slot)
	}
	// The silent station: the reserve is resent after the restart, never
	// acknowledged, times out and fails the booking.
	if r := silent.nextCmd(t, wire.ActionReserve); r.BookingID != b1.ID {
		t.Errorf("resent reserve for booking %q, want %q", r.BookingID, b1.ID)
	}
	waitStatus(t, user, b1.ID, wire.BookingStatusFailed)

	for _, sid := range []string{"BK-silent", "BK-acking"} {
		waitAvailable(t, user, sid, slots)
		v, err := user.Station(ctx, sid)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range v.Slots {
			if s.Reserved || s.BookingID != "" {
				t.Errorf("%s slot %d still reserved (booking %q)", sid, s.Slot.Slot, s.BookingID)
			}
		}
		if v.BookedBatteries != 0 {
			t.Errorf("%s: booked_batteries %d after both bookings ended", sid, v.BookedBatteries)
		}
	}
	// A new booking can take the released battery.
	if _, err := user.Book(ctx, "BK-acking"); err != nil {
		t.Errorf("booking again after the release: %v", err)
	}
	p2.stop(t)

	booked := map[string]int{}
	for _, f := range checkDB(t, filepath.Join(dir, "swapd.db")) {
		if f.Type == wire.TypeBatteryBooked {
			booked[f.BookingID]++
		}
	}
	for _, b := range []wire.Booking{b1, b2} {
		if booked[b.ID] != 1 {
			t.Errorf("booking %s: battery_booked %d times in the log, want 1", b.ID, booked[b.ID])
		}
	}
}

func waitAvailable(t *testing.T, c *client.Client, sid string, n int) {
	t.Helper()
	var last wire.StationView
	var lastErr error
	ok := testwait.Until(20*time.Second, func() bool {
		last, lastErr = c.Station(context.Background(), sid)
		return lastErr == nil && last.AvailableBatteries == n
	})
	if !ok {
		t.Fatalf("%s: available_batteries %d, want %d (counts %+v, err %v)", sid, last.AvailableBatteries, n, last.Inventory, lastErr)
	}
}

func waitStatus(t *testing.T, c *client.Client, id, status string) {
	t.Helper()
	var last wire.Booking
	var lastErr error
	ok := testwait.Until(20*time.Second, func() bool {
		last, lastErr = c.Booking(context.Background(), id)
		return lastErr == nil && last.Status == status
	})
	if !ok {
		t.Fatalf("booking %s: status %q (reason %q), want %q (err %v)", id, last.Status, last.Reason, status, lastErr)
	}
}

// TestCrashDuringBookingRace SIGKILLs swapd while twenty riders race to
// book four batteries. After the restart every booking a rider was told
// about (201) still exists, no battery or slot is held by two active
// bookings, the station's booked count matches, and no booking stays
// pending.
func TestCrashDuringBookingRace(t *testing.T) {
	const (
		slots  = 4
		riders = 20
	)
	// Every rider and the polling below share one address: no HTTP limit.
	env := []string{"SWAPD_COMMAND_RETRY=200ms", "SWAPD_COMMAND_TIMEOUT=6s", "SWAPD_HTTP_RATE_LIMIT=-1"}
	dir := t.TempDir()
	p := startSwapd(t, dir, env...)
	secrets := provision(t, p.admin(), slots, "RACE-1")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	tokens := make([]string, riders)
	for i := range tokens {
		u, err := p.admin().CreateUser(ctx, fmt.Sprintf("racer-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = u.Token
	}
	st := startAckingStation(t, p.mqtt, "RACE-1", secrets["RACE-1"], "boot-r", 1, slots, true)
	waitAvailable(t, p.admin(), "RACE-1", slots)

	var mu sync.Mutex
	told := map[string]wire.Booking{} // bookings answered 201
	firstWin := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range riders {
		wg.Go(func() {
			c := client.New(p.http, tokens[i])
			for range 3 { // each rider tries a few times
				b, err := c.Book(ctx, "RACE-1")
				if err != nil {
					continue
				}
				mu.Lock()
				told[b.ID] = b
				mu.Unlock()
				once.Do(func() { close(firstWin) })
			}
		})
	}
	select {
	case <-firstWin:
	case <-ctx.Done():
		t.Fatal("no booking succeeded")
	}
	p.kill() // in the middle of the race
	wg.Wait()
	st.close()

	p2 := startSwapd(t, dir, env...)
	startAckingStation(t, p2.mqtt, "RACE-1", secrets["RACE-1"], "boot-r", 2, slots, true)
	var all []wire.Booking
	testwait.For(t, 30*time.Second, "no booking pending", func() bool {
		all = all[:0]
		for i := range riders {
			var out struct {
				Bookings []wire.Booking `json:"bookings"`
			}
			if err := client.New(p2.http, tokens[i]).Do(ctx, "GET", "/api/bookings", nil, &out); err != nil {
				return false
			}
			all = append(all, out.Bookings...)
		}
		for _, b := range all {
			if b.Status == wire.BookingStatusPending {
				return false
			}
		}
		return true
	})
	byID := map[string]wire.Booking{}
	slotHolder := map[int]string{}
	batteryHolder := map[string]string{}
	active := 0
	for _, b := range all {
		byID[b.ID] = b
		switch b.Status {
		case wire.BookingStatusConfirmed, wire.BookingStatusReady:
			active++
			if other, ok := slotHolder[b.Slot]; ok {
				t.Errorf("slot %d held by bookings %s and %s", b.Slot, other, b.ID)
			}
			if other, ok := batteryHolder[b.BatteryID]; ok {
				t.Errorf("battery %s held by bookings %s and %s", b.BatteryID, other, b.ID)
			}
			slotHolder[b.Slot], batteryHolder[b.BatteryID] = b.ID, b.ID
		}
	}
	mu.Lock()
	for id := range told {
		if _, ok := byID[id]; !ok {
			t.Errorf("booking %s was answered 201 but is gone after the crash", id)
		}
	}
	nTold := len(told)
	mu.Unlock()
	v, err := p2.admin().Station(ctx, "RACE-1")
	if err != nil {
		t.Fatal(err)
	}
	if active > slots || v.BookedBatteries != active {
		t.Errorf("%d active bookings, station says %d booked (of %d slots)", active, v.BookedBatteries, slots)
	}
	for _, s := range v.Slots {
		if s.Reserved && slotHolder[s.Slot.Slot] != s.BookingID {
			t.Errorf("slot %d reserved for %q, active booking there is %q", s.Slot.Slot, s.BookingID, slotHolder[s.Slot.Slot])
		}
	}
	t.Logf("booking race: %d riders, %d bookings answered 201 before/around the SIGKILL, %d bookings after restart, %d active on %d slots, no double hold",
		riders, nTold, len(all), active, slots)
}
