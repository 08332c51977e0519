package bridge

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func testMachine() *machine {
	return &machine{thresholds{readySoC: 90, minSoH: 70, maxTempC: 50, hold: 15 * time.Minute, chargeWait: time.Hour}}
}

// slotOf is a healthy closed, locked slot holding battery (empty when "").
func slotOf(n int, battery string, soc float64) wire.Slot {
	s := wire.Slot{Slot: n, SoC: soc, SoH: 95, TempC: 30, VoltageV: 52, Door: wire.DoorClosed, Locked: true}
	if battery != "" {
		s.BatteryID = &battery
	}
	return s
}

func telem(boot string, seq uint64, full bool, slots ...wire.Slot) *wire.Telemetry {
	return &wire.Telemetry{BootID: boot, Seq: seq, TS: t0, Full: full, Slots: slots}
}

func types(eff effects) []string {
	out := make([]string, len(eff.Events))
	for i, e := range eff.Events {
		out[i] = e.Type
	}
	return out
}

func actions(eff effects) []string {
	var out []string
	for _, c := range eff.Commands {
		out = append(out, c.Action)
	}
	return out
}

func statuses(eff effects) []string {
	var out []string
	for _, b := range eff.Bookings {
		out = append(out, b.Status)
	}
	return out
}

// online4 is station S1 with 4 slots after boot A's first full telemetry:
// slot 1 B1 at 95, slot 2 B2 at 50 (charging), slot 3 B3 at 92, slot 4 empty.
func online4(t *testing.T, m *machine) stationState {
	t.Helper()
	st := newStation("S1", 4)
	st.Inv = m.inventory(&st)
	next, eff := m.telemetry(&st, telem("A", 1, true,
		slotOf(1, "B1", 95), slotOf(2, "B2", 50), slotOf(3, "B3", 92), slotOf(4, "", 0)), t0)
	if got := types(eff); !slices.Equal(got, []string{wire.TypeStationStatus, wire.TypeInventoryUpdate}) {
		t.Fatalf("first telemetry events = %v", got)
	}
	if want := (wire.Inventory{AvailableBatteries: 2, ChargingBatteries: 1, EmptySlots: 1, TotalSlots: 4}); next.Inv != want {
		t.Fatalf("inventory = %+v, want %+v", next.Inv, want)
	}
	return next
}

// booked returns online4 with slot 1 (B1) booked as "bk1" by "u1", acked.
func booked(t *testing.T, m *machine) stationState {
	t.Helper()
	st := online4(t, m)
	if i := m.pick(&st); i != 0 {
		t.Fatalf("pick = %d, want slot index 0 (highest soc)", i)
	}
	st, eff := m.book(&st, 0, "bk1", "u1", t0)
	if got := types(eff); !slices.Equal(got, []string{wire.TypeBatteryBooked, wire.TypeInventoryUpdate}) {
		t.Fatalf("book events = %v", got)
	}
	if got := actions(eff); !slices.Equal(got, []string{wire.ActionReserve}) {
		t.Fatalf("book commands = %v", got)
	}
	st, eff = m.reserveAcked(&st, "bk1", true, "", t0)
	if got := types(eff); !slices.Equal(got, []string{wire.TypeBookingConfirmed, wire.TypeBookingReady}) {
		t.Fatalf("ack events = %v", got)
	}
	if got := statuses(eff); !slices.Equal(got, []string{wire.BookingStatusConfirmed, wire.BookingStatusReady}) {
		t.Fatalf("ack booking changes = %v", got)
	}
	if r := st.Slots[0].Res; r.Status != wire.BookingStatusReady || !r.ExpiresAt.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("reservation = %+v", r)
	}
	return st
}

func TestTelemetryRules(t *testing.T) {
	m := testMachine()
	cases := []struct {
		name     string
		prep     func(st stationState) stationState
		tel      *wire.Telemetry
		ignored  bool
		snapshot bool
		events   []string
		check    func(t *testing.T, st stationState)
	}{
		{
			name: "duplicate seq is ignored", tel: telem("A", 1, false, slotOf(4, "B9", 99)),
			ignored: true,
		},
		{
			name: "older seq of the current boot is ignored", prep: func(st stationState) stationState { st.Seq = 7; return st },
			tel: telem("A", 6, false, slotOf(4, "B9", 99)), ignored: true,
		},
		{
			name: "next seq applies: battery added", tel: telem("A", 2, false, slotOf(4, "B9", 99)),
			events: []string{wire.TypeBatteryAdded, wire.TypeInventoryUpdate},
			check: func(t *testing.T, st stationState) {
				if st.Seq != 2 || st.Slots[3].BatteryID != "B9" || st.Inv.AvailableBatteries != 3 {
					t.Fatalf("state = seq %d slot4 %q inv %+v", st.Seq, st.Slots[3].BatteryID, st.Inv)
				}
			},
		},
		{
			name: "gap in a partial telemetry applies and asks for a snapshot", tel: telem("A", 5, false, slotOf(2, "B2", 60)),
			snapshot: true,
			check: func(t *testing.T, st stationState) {
				if st.Seq != 5 || st.Slots[1].SoC != 60 {
					t.Fatalf("not applied: seq %d soc %v", st.Seq, st.Slots[1].SoC)
				}
			},
		},
		{
			name: "gap in a full telemetry needs no snapshot", tel: telem("A", 9, true, slotOf(1, "B1", 96)),
		},
		{
			name: "removal without a booking is an operator alert", tel: telem("A", 2, false, slotOf(2, "", 0)),
			events: []string{wire.TypeBatteryRemoved, wire.TypeInventoryUpdate},
		},
		{
			name: "soc crossing the threshold changes the counts", tel: telem("A", 2, false, slotOf(2, "B2", 90)),
			events: []string{wire.TypeInventoryUpdate},
		},
		{
			name: "a partial telemetry of an unseen boot is ignored and asks for a snapshot",
			tel:  telem("B", 3, false, slotOf(4, "B9", 99)), ignored: true, snapshot: true,
		},
		{
			name: "a full telemetry of a new boot takes over", tel: telem("B", 1, true, slotOf(1, "B1", 95), slotOf(2, "B2", 50), slotOf(3, "B3", 92), slotOf(4, "", 0)),
			check: func(t *testing.T, st stationState) {
				if st.BootID != "B" || !slices.Equal(st.OldBoots, []string{"A"}) || st.Seq != 1 {
					t.Fatalf("boot %q old %v seq %d", st.BootID, st.OldBoots, st.Seq)
				}
			},
		},
		{
			name: "telemetry of a superseded boot never overwrites newer state (reordered across a reconnect)",
			prep: func(st stationState) stationState {
				st.OldBoots = []string{"Z"}
				return st
			},
			tel: telem("Z", 99, true, slotOf(1, "", 0)), ignored: true,
		},
		{
			name: "telemetry marks an offline station online", prep: func(st stationState) stationState {
				st.Online = false
				st.OfflineSince = t0
				st.Status = wire.StationOffline
				st.Inv = m.inventory(&st)
				return st
			},
			tel:    telem("A", 2, false),
			events: []string{wire.TypeStationStatus, wire.TypeInventoryUpdate},
		},
		{
			name: "all slots faulted: the station is faulted", tel: telem("A", 2, false,
				withFault(slotOf(1, "B1", 95)), withFault(slotOf(2, "B2", 50)), withFault(slotOf(3, "B3", 92)), withFault(slotOf(4, "", 0))),
			events: []string{wire.TypeStationStatus, wire.TypeInventoryUpdate},
			check: func(t *testing.T, st stationState) {
				if st.Status != wire.StationFaulted || st.Inv.FaultedSlots != 4 {
					t.Fatalf("status %s inv %+v", st.Status, st.Inv)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := online4(t, m)
			// Pretend the station was last in an earlier state (status
			// already published) so every case starts from the same place.
			if tc.prep != nil {
				st = tc.prep(st)
			}
			before := st.clone()
			next, eff := m.telemetry(&st, tc.tel, t0.Add(time.Second))
			if eff.Ignored != tc.ignored || eff.Snapshot != tc.snapshot {
				t.Fatalf("ignored=%v snapshot=%v, want %v %v", eff.Ignored, eff.Snapshot, tc.ignored, tc.snapshot)
			}
			if tc.ignored && (len(eff.Events) != 0 || next.Seq != before.Seq || next.BootID != before.BootID) {
				t.Fatalf("ignored message changed something: %v", types(eff))
			}
			if tc.events != nil && !slices.Equal(types(eff), tc.events) {
				t.Fatalf("events = %v, want %v", types(eff), tc.events)
			}
			if !slices.Equal(st.OldBoots, before.OldBoots) || st.Slots[0] != before.Slots[0] {
				t.Fatal("the previous state was modified")
			}
			if tc.check != nil {
				tc.check(t, next)
			}
		})
	}
}

func withFault(s wire.Slot) wire.Slot { s.Fault = "overheat"; return s }

func TestStatusAndWill(t *testing.T) {
	m := testMachine()
	st := online4(t, m)

	// The station reboots: boot B's status arrives, then boot A's Will.
	st, eff := m.status(&st, &wire.Status{Online: true, BootID: "B"}, t0.Add(time.Second))
	if eff.Ignored || st.BootID != "B" || st.Seq != 0 || !st.Online {
		t.Fatalf("new boot status: %+v ignored=%v", st, eff.Ignored)
	}
	if len(eff.Events) != 0 {
		t.Fatalf("status of an online station should not publish: %v", types(eff))
	}
	st2, eff := m.status(&st, &wire.Status{Online: false, BootID: "A"}, t0.Add(2*time.Second))
	if !eff.Ignored || !st2.Online {
		t.Fatal("a Will that arrives after a newer boot's status must be ignored")
	}
	// A late telemetry of boot A is ignored too.
	if _, eff := m.telemetry(&st, telem("A", 2, true, slotOf(1, "", 0)), t0); !eff.Ignored {
		t.Fatal("telemetry of the superseded boot was applied")
	}
	// Boot B's first telemetry (seq 1) is not a gap.
	st, eff = m.telemetry(&st, telem("B", 1, false, slotOf(4, "B9", 99)), t0)
	if eff.Ignored || eff.Snapshot {
		t.Fatalf("first telemetry of the new boot: ignored=%v snapshot=%v", eff.Ignored, eff.Snapshot)
	}
	// The Will of the current boot takes the station offline.
	st, eff = m.status(&st, &wire.Status{Online: false, BootID: "B"}, t0.Add(3*time.Second))
	if st.Online || st.Status != wire.StationOffline || !st.OfflineSince.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("after Will: %+v", st)
	}
	if got := types(eff); !slices.Equal(got, []string{wire.TypeStationStatus, wire.TypeInventoryUpdate}) {
		t.Fatalf("Will events = %v", got)
	}
	if st.Inv.AvailableBatteries != 0 {
		t.Fatalf("an offline station offers batteries: %+v", st.Inv)
	}
	// A Will of an unseen boot is ignored.
	if _, eff := m.status(&st, &wire.Status{Online: false, BootID: "Q"}, t0); !eff.Ignored {
		t.Fatal("Will of an unseen boot applied")
	}
}

func TestOldBootsBounded(t *testing.T) {
	m := testMachine()
	st := newStation("S1", 1)
	for i := range 20 {
		st, _ = m.status(&st, &wire.Status{Online: true, BootID: string(rune('a' + i))}, t0)
	}
	if len(st.OldBoots) != maxOldBoots || st.OldBoots[maxOldBoots-1] != "s" {
		t.Fatalf("old boots = %v", st.OldBoots)
	}
}

func TestBookingLifecycle(t *testing.T) {
	m := testMachine()

	t.Run("unlock then removal collects", func(t *testing.T) {
		st := booked(t, m)
		if st.Inv.BookedBatteries != 1 || st.Inv.AvailableBatteries != 1 {
			t.Fatalf("inventory = %+v", st.Inv)
		}
		st, eff, ok := m.collect(&st, "bk1", t0)
		if !ok || !slices.Equal(actions(eff), []string{wire.ActionUnlock}) {
			t.Fatalf("collect: ok=%v commands=%v", ok, actions(eff))
		}
		open := slotOf(1, "B1", 95)
		open.Door, open.Locked = wire.DoorOpen, false
		st, eff = m.telemetry(&st, telem("A", 2, false, open), t0)
		if len(eff.Bookings) != 0 || !st.Slots[0].Res.active() {
			t.Fatal("an open door alone must not end the booking")
		}
		st, eff = m.telemetry(&st, telem("A", 3, false, slotOf(1, "", 0)), t0)
		if got := types(eff); !slices.Equal(got, []string{wire.TypeBatteryCollected, wire.TypeInventoryUpdate}) {
			t.Fatalf("events = %v", got)
		}
		if got := statuses(eff); !slices.Equal(got, []string{wire.BookingStatusCollected}) {
			t.Fatalf("booking changes = %v", got)
		}
		if st.Slots[0].Res.active() || st.Inv.BookedBatteries != 0 || st.Inv.EmptySlots != 2 {
			t.Fatalf("after collection: res %+v inv %+v", st.Slots[0].Res, st.Inv)
		}
	})

	t.Run("door closes with the battery still inside after an unlock", func(t *testing.T) {
		st := booked(t, m)
		st, _, _ = m.collect(&st, "bk1", t0)
		open := slotOf(1, "B1", 95)
		open.Door, open.Locked = wire.DoorOpen, false
		st, _ = m.telemetry(&st, telem("A", 2, false, open), t0)
		st, eff := m.telemetry(&st, telem("A", 3, false, slotOf(1, "B1", 95)), t0)
		if slices.Contains(types(eff), wire.TypeBatteryCollected) || len(eff.Bookings) != 0 {
			t.Fatalf("battery still inside but events %v bookings %v", types(eff), statuses(eff))
		}
		if r := st.Slots[0].Res; r.Status != wire.BookingStatusReady {
			t.Fatalf("booking not collectable any more: %+v", r)
		}
		if _, eff, ok := m.collect(&st, "bk1", t0); !ok || len(eff.Commands) != 1 {
			t.Fatal("a second collect must send unlock again")
		}
	})

	t.Run("removal of a reserved battery without unlock fails the booking", func(t *testing.T) {
		st := booked(t, m)
		st, eff := m.telemetry(&st, telem("A", 2, false, slotOf(1, "", 0)), t0)
		if got := types(eff); !slices.Equal(got, []string{wire.TypeBatteryRemoved, wire.TypeNotification, wire.TypeInventoryUpdate}) {
			t.Fatalf("events = %v", got)
		}
		if eff.Events[1].UserID != "u1" || !slices.Equal(statuses(eff), []string{wire.BookingStatusFailed}) {
			t.Fatalf("notification user %q bookings %v", eff.Events[1].UserID, statuses(eff))
		}
		if st.Slots[0].Res.active() {
			t.Fatal("reservation kept")
		}
	})

	t.Run("fault on a reserved slot fails the booking and releases", func(t *testing.T) {
		st := booked(t, m)
		st, eff := m.telemetry(&st, telem("A", 2, false, withFault(slotOf(1, "B1", 95))), t0)
		if !slices.Equal(statuses(eff), []string{wire.BookingStatusFailed}) || !slices.Equal(actions(eff), []string{wire.ActionRelease}) {
			t.Fatalf("bookings %v commands %v", statuses(eff), actions(eff))
		}
		if !strings.Contains(eff.Bookings[0].Reason, "overheat") {
			t.Fatalf("reason %q", eff.Bookings[0].Reason)
		}
		if got := types(eff); !slices.Equal(got, []string{wire.TypeNotification, wire.TypeInventoryUpdate}) {
			t.Fatalf("events = %v", got)
		}
		if st.Inv.FaultedSlots != 1 || st.Inv.BookedBatteries != 0 {
			t.Fatalf("inventory %+v", st.Inv)
		}
	})

	t.Run("an ack that never comes fails the booking", func(t *testing.T) {
		st := online4(t, m)
		st, _ = m.book(&st, 0, "bk1", "u1", t0)
		next, eff := m.reserveTimedOut(&st, "bk1", t0.Add(time.Minute))
		if !slices.Equal(statuses(eff), []string{wire.BookingStatusFailed}) || !slices.Equal(actions(eff), []string{wire.ActionRelease}) {
			t.Fatalf("bookings %v commands %v", statuses(eff), actions(eff))
		}
		if next.Slots[0].Res.active() || next.Inv.AvailableBatteries != 2 {
			t.Fatalf("battery not freed: %+v", next.Inv)
		}
		// The ack arriving late changes nothing.
		if _, eff := m.reserveAcked(&next, "bk1", true, "", t0); !eff.Ignored {
			t.Fatal("late ack applied")
		}
	})

	t.Run("a refused reserve fails the booking without release", func(t *testing.T) {
		st := online4(t, m)
		st, _ = m.book(&st, 0, "bk1", "u1", t0)
		_, eff := m.reserveAcked(&st, "bk1", false, "slot busy", t0)
		if !slices.Equal(statuses(eff), []string{wire.BookingStatusFailed}) || len(eff.Commands) != 0 {
			t.Fatalf("bookings %v commands %v", statuses(eff), actions(eff))
		}
		if !strings.Contains(eff.Bookings[0].Reason, "slot busy") {
			t.Fatalf("reason %q", eff.Bookings[0].Reason)
		}
	})

	t.Run("a charging battery turns ready later and the hold starts then", func(t *testing.T) {
		st := online4(t, m)
		st, _ = m.book(&st, 1, "bk2", "u1", t0) // B2 at 50
		st, eff := m.reserveAcked(&st, "bk2", true, "", t0)
		if got := types(eff); !slices.Equal(got, []string{wire.TypeBookingConfirmed}) {
			t.Fatalf("events = %v", got)
		}
		later := t0.Add(30 * time.Minute)
		st, eff = m.telemetry(&st, telem("A", 2, false, slotOf(2, "B2", 91)), later)
		if got := types(eff); !slices.Equal(got, []string{wire.TypeBookingReady}) {
			t.Fatalf("events = %v", got)
		}
		if !st.Slots[1].Res.ExpiresAt.Equal(later.Add(15 * time.Minute)) {
			t.Fatalf("hold expires at %v", st.Slots[1].Res.ExpiresAt)
		}
	})

	t.Run("cancel releases; a cancelled booking cannot be collected", func(t *testing.T) {
		st := booked(t, m)
		st, eff, ok := m.cancel(&st, "bk1", t0)
		if !ok || !slices.Equal(actions(eff), []string{wire.ActionRelease}) || !slices.Equal(statuses(eff), []string{wire.BookingStatusCancelled}) {
			t.Fatalf("cancel ok=%v %v %v", ok, actions(eff), statuses(eff))
		}
		if _, _, ok := m.collect(&st, "bk1", t0); ok {
			t.Fatal("collect after cancel")
		}
		if _, _, ok := m.cancel(&st, "bk1", t0); ok {
			t.Fatal("cancel twice")
		}
	})

	t.Run("collect needs ready", func(t *testing.T) {
		st := online4(t, m)
		st, _ = m.book(&st, 1, "bk2", "u1", t0)
		st, _ = m.reserveAcked(&st, "bk2", true, "", t0)
		if _, _, ok := m.collect(&st, "bk2", t0); ok {
			t.Fatal("collect of a confirmed (not ready) booking")
		}
	})
}

func TestTimers(t *testing.T) {
	m := testMachine()
	const offlineAfter, offlineFail = 3 * time.Minute, 10 * time.Minute

	t.Run("nothing due changes nothing", func(t *testing.T) {
		st := booked(t, m)
		_, eff := m.timers(&st, t0.Add(time.Minute), offlineAfter, offlineFail)
		if !eff.empty() {
			t.Fatalf("events %v", types(eff))
		}
	})
	t.Run("hold expiry releases and notifies", func(t *testing.T) {
		st := booked(t, m)
		st.LastSeen = t0.Add(14 * time.Minute)
		st, eff := m.timers(&st, t0.Add(15*time.Minute), offlineAfter, offlineFail)
		if !slices.Equal(statuses(eff), []string{wire.BookingStatusExpired}) || !slices.Equal(actions(eff), []string{wire.ActionRelease}) {
			t.Fatalf("bookings %v commands %v", statuses(eff), actions(eff))
		}
		if got := types(eff); !slices.Equal(got, []string{wire.TypeNotification, wire.TypeInventoryUpdate}) {
			t.Fatalf("events = %v", got)
		}
		if st.Inv.AvailableBatteries != 2 {
			t.Fatalf("battery not back: %+v", st.Inv)
		}
	})
	t.Run("inactivity takes the station offline, a long offline period fails bookings", func(t *testing.T) {
		st := booked(t, m)
		// Keep the hold from expiring first.
		st.Slots[0].Res.ExpiresAt = t0.Add(time.Hour)
		st, eff := m.timers(&st, t0.Add(offlineAfter), offlineAfter, offlineFail)
		if st.Online || !slices.Equal(types(eff), []string{wire.TypeStationStatus, wire.TypeInventoryUpdate}) {
			t.Fatalf("online=%v events %v", st.Online, types(eff))
		}
		if len(eff.Bookings) != 0 {
			t.Fatal("booking failed at once")
		}
		st, eff = m.timers(&st, t0.Add(offlineAfter+offlineFail), offlineAfter, offlineFail)
		if !slices.Equal(statuses(eff), []string{wire.BookingStatusFailed}) {
			t.Fatalf("bookings %v", statuses(eff))
		}
	})
}

func TestPick(t *testing.T) {
	m := testMachine()
	st := online4(t, m)
	// Highest soc swappable first: B1 (95) then B3 (92), then the charging B2.
	var got []int
	for k := range 3 {
		i := m.pick(&st)
		got = append(got, i)
		st, _ = m.book(&st, i, "bk"+string(rune('a'+k)), "u1", t0)
	}
	if !slices.Equal(got, []int{0, 2, 1}) {
		t.Fatalf("picks = %v", got)
	}
	if i := m.pick(&st); i != -1 {
		t.Fatalf("pick with nothing left = %d", i)
	}
	st = online4(t, m)
	st.Slots[0].SoH = 60 // unhealthy
	st.Slots[2].Door = wire.DoorOpen
	if i := m.pick(&st); i != 1 {
		t.Fatalf("pick = %d, want the charging one", i)
	}
	st.Maintenance = true
	if i := m.pick(&st); i != -1 {
		t.Fatal("a station in maintenance offers a battery")
	}
}

func TestInventoryAddsUp(t *testing.T) {
	m := testMachine()
	st := booked(t, m)
	st.Slots[3].Fault = "sensor"
	inv := m.inventory(&st)
	sum := inv.AvailableBatteries + inv.BookedBatteries + inv.ChargingBatteries + inv.UnavailableBatteries + inv.EmptySlots + inv.FaultedSlots
	if sum != inv.TotalSlots || inv.TotalSlots != 4 {
		t.Fatalf("counts %+v do not add up", inv)
	}
}

// A station that is offline or in maintenance offers nothing, and its
// batteries are counted unavailable, not charging: the counts say why
// nothing can be booked there. Booked and faulted slots keep their counts.
func TestInventoryOfflineOrMaintenanceIsUnavailable(t *testing.T) {
	m := testMachine()
	st := booked(t, m) // online: one booked, the others as reported
	up := m.inventory(&st)
	if up.UnavailableBatteries != 0 {
		t.Fatalf("online station: %+v, want no unavailable battery", up)
	}
	for name, mutate := range map[string]func(*stationState){
		"offline":     func(s *stationState) { s.Online = false },
		"maintenance": func(s *stationState) { s.Maintenance = true },
	} {
		t.Run(name, func(t *testing.T) {
			s := st
			s.Slots = append([]slotState(nil), st.Slots...)
			mutate(&s)
			inv := m.inventory(&s)
			want := up
			want.UnavailableBatteries = up.AvailableBatteries + up.ChargingBatteries
			want.AvailableBatteries, want.ChargingBatteries = 0, 0
			if inv != want {
				t.Fatalf("counts %+v, want %+v", inv, want)
			}
			if want.UnavailableBatteries == 0 {
				t.Fatal("the test station has no battery to make unavailable")
			}
		})
	}
}

// timersDue is the tick's shortcut: whenever it says nothing is due, timers
// changes nothing; and it says due for each timer that fires.
func TestTimersDue(t *testing.T) {
	m := testMachine()
	const offlineAfter, offlineFail = 3 * time.Minute, 10 * time.Minute
	// offline is st after its station went offline at at, finished as a
	// commit stores it.
	offline := func(st stationState, at time.Time) stationState {
		st = st.clone()
		markOffline(&st, at)
		var eff effects
		m.finish(&st, &eff, at)
		return st
	}
	fresh := newStation("S0", 4)
	fresh.Inv = m.inventory(&fresh) // as the bridge creates it
	states := map[string]stationState{
		"new":            fresh,
		"online":         online4(t, m),
		"booked":         booked(t, m),
		"offline":        offline(online4(t, m), t0),
		"booked offline": offline(booked(t, m), t0),
	}
	for name, st := range states {
		for _, d := range []time.Duration{0, time.Minute, offlineAfter - 1, offlineAfter, offlineFail, 15 * time.Minute, time.Hour} {
			now := t0.Add(d)
			next, eff := m.timers(&st, now, offlineAfter, offlineFail)
			changed := !eff.empty() || next.Online != st.Online
			if due := m.timersDue(&st, now, offlineAfter, offlineFail); !due && changed {
				t.Errorf("%s at +%v: timersDue false, but timers changed the state (events %v)", name, d, types(eff))
			}
		}
	}
	for _, c := range []struct {
		name string
		st   stationState
		at   time.Duration
	}{
		{"liveness", online4(t, m), offlineAfter},
		{"hold expiry", booked(t, m), 15 * time.Minute},
		{"offline fail", offline(booked(t, m), t0), offlineFail},
	} {
		if !m.timersDue(&c.st, t0.Add(c.at), offlineAfter, offlineFail) {
			t.Errorf("%s: not due at +%v", c.name, c.at)
		}
	}
}
