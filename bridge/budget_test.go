package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// syncBuffer is a bytes.Buffer for a logger written from several
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

// churn is a full telemetry in which every slot holds a new battery id
// (round r): each slot makes a battery_removed and a battery_added.
func churn(seq uint64, slots, r int, fault string) *wire.Telemetry {
	t := &wire.Telemetry{BootID: "A", Seq: seq, Full: true}
	for i := 1; i <= slots; i++ {
		s := slotOf(i, fmt.Sprintf("B%d-%d", i, r), 40)
		s.Fault = fault
		t.Slots = append(t.Slots, s)
	}
	return t
}

// counterValue reads a counter from the registry.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

func countTypes(evs []store.Event) map[string]int {
	m := map[string]int{}
	for _, ev := range evs {
		m[ev.Type]++
	}
	return m
}

// A station churning battery ids at the publish limit (50 messages/s, two
// events per slot per message) is held to its event budget: per-battery
// events beyond it are coalesced into inventory_update (at most one a
// second), counted and logged once per episode, while booking events and
// station_status always go out and the last counts are published by the
// timer loop.
func TestStationEventBudget(t *testing.T) {
	const slots, perSecond, seconds = 256, 50, 4
	e := newEnv(t, 0)
	logs := &syncBuffer{}
	reg := prometheus.NewRegistry()
	e.cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	e.cfg.Registerer = reg
	e.reopen()
	e.addStation("S1", slots)
	e.online("S1", slots, 0)
	// A booking, to see its events go through during the flood.
	e.mustPublish(wire.KindTelemetry, telem("A", 2, false, slotOf(1, "KEEP", 95)))
	before := e.st.LastSeq()
	seq := uint64(2)

	var bk wire.Booking
	made := 0
	for i := range perSecond * seconds {
		e.clock.Advance(time.Second / perSecond)
		seq++
		msg := churn(seq, slots, i, "")
		msg.Slots = msg.Slots[1:] // slot 1 keeps its battery: the booking's
		fault := ""
		if i == perSecond*seconds-1 {
			fault = "door sensor" // the last message faults every slot
			keep := slotOf(1, "KEEP", 95)
			msg.Slots = append(msg.Slots, keep)
			for j := range msg.Slots {
				msg.Slots[j].Fault = fault
			}
		}
		e.mustPublish(wire.KindTelemetry, msg)
		made += 2 * (slots - 1)
		if i == 0 {
			made -= slots - 1 // the slots were empty: nothing removed
		}
		if i == perSecond {
			var err error
			if bk, err = e.b.Book(context.Background(), "rider", "S1"); err != nil {
				t.Fatal(err)
			}
		}
	}
	evs, err := e.st.EventsAfter(store.Channel{Kind: store.OneStation, ID: "S1"}, before, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := countTypes(evs)
	perBattery := got[wire.TypeBatteryAdded] + got[wire.TypeBatteryRemoved]
	t.Logf("%d-slot station, %d messages/s for %ds: %d per-battery events made, %d written (%d inventory_update, %d in all); without the budget %d/s",
		slots, perSecond, seconds, made, perBattery, got[wire.TypeInventoryUpdate], len(evs), made/seconds)
	// Burst 200 plus 10/s: the budget is shared with inventory_update.
	if limit := 200 + 10*seconds + 1; perBattery+got[wire.TypeInventoryUpdate] > limit {
		t.Fatalf("%d per-battery and inventory events written in %ds, want at most %d", perBattery+got[wire.TypeInventoryUpdate], seconds, limit)
	}
	if got[wire.TypeBatteryBooked] != 1 {
		t.Fatalf("battery_booked written %d times during the flood, want 1: %v", got[wire.TypeBatteryBooked], got)
	}
	// The fault fails the booking (a user event) and faults the station.
	if got[wire.TypeStationStatus] != 1 {
		t.Fatalf("station_status written %d times, want 1 (faulted): %v", got[wire.TypeStationStatus], got)
	}
	if b, _ := e.b.Booking("rider", bk.ID); b.Status != wire.BookingStatusFailed {
		t.Fatalf("booking %s, want failed by the fault", b.Status)
	}
	coalesced := counterValue(t, reg, "swapd_bridge_station_events_coalesced_total")
	if int(coalesced) != made-perBattery {
		t.Fatalf("coalesced metric %v, want %d", coalesced, made-perBattery)
	}
	if n := logs.count("over its event budget"); n != 1 {
		t.Fatalf("%d budget warnings, want one for the episode", n)
	}

	// The last counts reach the log within a tick of a second, though the
	// inventory_update of the last message was held back.
	e.b.tick(e.clock.Advance(time.Second))
	evs, err = e.st.EventsAfter(store.Channel{Kind: store.OneStation, ID: "S1"}, before, 0)
	if err != nil {
		t.Fatal(err)
	}
	var last wire.InventoryUpdate
	for _, ev := range evs {
		if ev.Type == wire.TypeInventoryUpdate {
			if err := json.Unmarshal(ev.Data, &last); err != nil {
				t.Fatal(err)
			}
		}
	}
	v, _ := e.b.StationView("S1")
	if last.Inventory != v.Inventory || last.FaultedSlots != slots {
		t.Fatalf("last inventory_update %+v, station %+v", last.Inventory, v.Inventory)
	}
	s, _ := e.b.station("S1")
	e.b.lockStation(s)
	held := s.budget.invHeld
	s.mu.Unlock()
	if held {
		t.Fatal("the station still has an inventory_update held back after the tick")
	}

	// Quiet for a while: the bucket refills, the episode ends, and a single
	// churning message is published in full again.
	e.clock.Advance(time.Minute)
	seq++
	small := churn(seq, 20, 1000, "")
	mark := e.st.LastSeq()
	e.mustPublish(wire.KindTelemetry, small)
	evs, _ = e.st.EventsAfter(store.Channel{Kind: store.OneStation, ID: "S1"}, mark, 0)
	if c := countTypes(evs); c[wire.TypeBatteryAdded] != 20 || c[wire.TypeBatteryRemoved] != 20 {
		t.Fatalf("after the quiet minute: %v, want 20 added and 20 removed", c)
	}
	if n := logs.count("back within its event budget"); n != 1 {
		t.Fatalf("%d end-of-episode lines, want 1", n)
	}
	// A second flood is a second episode, warned once more.
	for i := range 20 {
		e.clock.Advance(time.Second / perSecond)
		seq++
		e.mustPublish(wire.KindTelemetry, churn(seq, 20, 2000+i, ""))
	}
	if n := logs.count("over its event budget"); n != 2 {
		t.Fatalf("%d budget warnings after the second flood, want 2", n)
	}
}

// A negative StationEventRate turns the budget off.
func TestStationEventBudgetOff(t *testing.T) {
	e := newEnv(t, 0)
	e.cfg.StationEventRate = -1
	e.reopen()
	e.addStation("S1", 128)
	e.online("S1", 128, 0)
	mark := e.st.LastSeq()
	for i := range 3 {
		e.mustPublish(wire.KindTelemetry, churn(uint64(i+2), 128, i, ""))
	}
	evs, _ := e.st.EventsAfter(store.Channel{Kind: store.OneStation, ID: "S1"}, mark, 0)
	if c := countTypes(evs); c[wire.TypeBatteryAdded] != 3*128 || c[wire.TypeBatteryRemoved] != 2*128 {
		t.Fatalf("events %v", c)
	}
}

// The two defences against one station flooding the log, end to end from
// the bridge: with the event budget, a 256-slot station churning battery
// ids at 50 messages/s writes a few hundred events; with the budget off,
// its 50,000 events are cut back to the station's own retention cap
// (scaled down here: 10,000 events in all, 5,000 per station), and a quiet
// user's notification written before the flood is still there to resume.
func TestFloodLeavesQuietUsersNotification(t *testing.T) {
	const slots, messages = 256, 100
	for _, budget := range []bool{true, false} {
		t.Run(fmt.Sprintf("budget=%v", budget), func(t *testing.T) {
			e := newEnv(t, 0)
			e.sopts = store.Options{Retention: store.Retention{MaxAge: -1, MaxEvents: 10_000, MaxStationEvents: 5_000}}
			if !budget {
				e.cfg.StationEventRate = -1
			}
			e.reopen()
			ctx := context.Background()
			if err := e.st.CreateUser(ctx, store.User{ID: "quiet", TokenHash: sha256.Sum256([]byte("quiet-token"))}); err != nil {
				t.Fatal(err)
			}
			e.addStation("F", slots)
			e.online("F", slots, 0)
			if err := e.b.Notify(ctx, "quiet", wire.Notification{Title: "Welcome", Message: "your first swap is free"}); err != nil {
				t.Fatal(err)
			}
			note := e.st.LastSeq()
			for i := range messages {
				e.clock.Advance(20 * time.Millisecond)
				p, _ := json.Marshal(churn(uint64(i+2), slots, i, ""))
				if err := publishWait(e.b, "F", wire.KindTelemetry, p); err != nil {
					t.Fatal(err)
				}
			}
			written := e.st.LastSeq() - note
			removed, err := e.st.Compact(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.st.EventsAfter(store.Channel{Kind: store.OneUser, ID: "quiet"}, note-1, 0)
			if err != nil || len(got) != 1 || got[0].Seq != note {
				t.Fatalf("the quiet user's notification after the flood: %v, %v", len(got), err)
			}
			fromF := e.st.FirstSeqOf(store.Channel{Kind: store.OneStation, ID: "F"})
			t.Logf("budget %v: %d messages made %d events; compaction removed %d; F's channel complete from seq %d of %d; the notification (seq %d) resumes",
				budget, messages, written, removed, fromF, e.st.LastSeq(), note)
			if budget && written > 300 {
				t.Fatalf("%d events written with the budget", written)
			}
			if !budget {
				if written < 50_000 || removed == 0 {
					t.Fatalf("without the budget %d events written, %d removed: no flood", written, removed)
				}
				if _, err := e.st.EventsAfter(store.Channel{Kind: store.OneStation, ID: "F"}, note, 0); !errors.Is(err, store.ErrCompacted) {
					t.Fatalf("F resuming from before its cut: %v, want ErrCompacted", err)
				}
			}
		})
	}
}
