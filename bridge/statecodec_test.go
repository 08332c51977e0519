package bridge

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

func fullState() stationState {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)
	st := stationState{
		ID: "S-1", Online: true, Maintenance: true, BootID: "boot-3",
		OldBoots: []string{"boot-1", "boot-2"}, Seq: 1<<40 + 7,
		LastSeen: t0, OfflineSince: t0.Add(-time.Hour),
		Status: wire.StationMaintenance,
		Inv:    wire.Inventory{AvailableBatteries: 1, BookedBatteries: 1, ChargingBatteries: 1, UnavailableBatteries: 2, EmptySlots: 1, FaultedSlots: 1, TotalSlots: 7},
		Slots: []slotState{
			{},
			{Known: true, BatteryID: "B-1", SoC: 95, SoH: 97.25, TempC: 31.2, VoltageV: 52.1, Charging: true, Door: wire.DoorClosed, Locked: true},
			{Known: true, BatteryID: "B-2", SoC: 87.5, SoH: 70, TempC: -4.1, VoltageV: 0.1, Door: wire.DoorOpen, Fault: "overheat ✓ \"x\""},
			{Known: true, BatteryID: "B-3", SoC: math.SmallestNonzeroFloat64, SoH: math.MaxFloat64, Locked: true,
				Res: reservation{BookingID: "bk-1", UserID: "u-1", BatteryID: "B-3", Status: "ready", Unlocked: true, ExpiresAt: t0.Add(15 * time.Minute)}},
			{Known: true, Res: reservation{BookingID: "bk-2", Status: "pending"}},
		},
	}
	return st
}

func TestStateCodecRoundTrip(t *testing.T) {
	cases := map[string]stationState{
		"full":  fullState(),
		"new":   newStation("S-2", 12),
		"empty": {ID: "S-3", Slots: []slotState{}},
		"pre-1970 time": {ID: "S-4", LastSeen: time.Date(1900, 1, 1, 0, 0, 0, 1, time.UTC),
			Slots: []slotState{}},
	}
	for name, st := range cases {
		t.Run(name, func(t *testing.T) {
			raw := appendState(nil, &st)
			var got stationState
			if err := decodeState(raw, &got); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, st) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, st)
			}
		})
	}
}

// A record in format v1 (six inventory counts, before the unavailable
// count) still loads, with no unavailable batteries.
func TestStateCodecReadsV1(t *testing.T) {
	st := fullState()
	st.Inv.UnavailableBatteries = 0
	v2 := appendState(nil, &st)
	// v1 is v2 without the seventh count: find it right after the six.
	d := stateDecoder{b: v2}
	d.byte()
	d.byte()
	d.str()
	d.str()
	for range d.count(maxDecodedOld) {
		d.str()
	}
	d.uvarint()
	d.time()
	d.time()
	d.str()
	for range 6 {
		d.uvarint()
	}
	at := len(v2) - len(d.b)
	v1 := append([]byte{stateCodecV1}, v2[1:at]...)
	v1 = append(v1, v2[at+1:]...) // the seventh count (0) is one byte
	var got stationState
	if err := decodeState(v1, &got); err != nil {
		t.Fatalf("decode v1: %v", err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("v1 record:\n got %+v\nwant %+v", got, st)
	}
}

// A record written as JSON by an earlier version still loads.
func TestStateCodecReadsJSON(t *testing.T) {
	st := fullState()
	raw, err := json.Marshal(&st)
	if err != nil {
		t.Fatal(err)
	}
	var got stationState
	if err := decodeState(append([]byte(" \n"), raw...), &got); err != nil {
		t.Fatalf("decode JSON: %v", err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("JSON:\n got %+v\nwant %+v", got, st)
	}
}

// The record is much smaller than the JSON it replaces.
func TestStateCodecSize(t *testing.T) {
	st := newStation("S-1", 12)
	for i := range st.Slots {
		st.Slots[i] = slotState{Known: true, BatteryID: "B-1234", SoC: 87.5, SoH: 97, TempC: 31.2, VoltageV: 52.1, Door: wire.DoorClosed, Locked: true}
	}
	j, _ := json.Marshal(&st)
	b := appendState(nil, &st)
	if len(b)*2 > len(j) {
		t.Fatalf("binary record %d bytes, JSON %d: want at most half", len(b), len(j))
	}
}

func TestStateCodecCorrupt(t *testing.T) {
	good := appendState(nil, new(fullState()))
	for i := range len(good) {
		var st stationState
		err := decodeState(good[:i], &st)
		if err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
		if i > 0 && !errors.Is(err, errStateRecord) {
			t.Fatalf("truncated to %d bytes: %v, want errStateRecord", i, err)
		}
	}
	if err := decodeState(append(good, 0), new(stationState)); !errors.Is(err, errStateRecord) {
		t.Fatalf("trailing byte: %v", err)
	}
	if err := decodeState([]byte{0x7f, 0}, new(stationState)); !errors.Is(err, errStateRecord) {
		t.Fatalf("unknown format: %v", err)
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(appendState(nil, new(fullState())))
	f.Add(appendState(nil, new(newStation("S", 3))))
	j, _ := json.Marshal(new(fullState()))
	f.Add(j)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var st stationState
		if decodeState(raw, &st) != nil || len(raw) == 0 || raw[0] != stateCodecV1 {
			return
		}
		// What decodes re-encodes to a record that decodes to the same
		// state (compared by its encoding: floats bit for bit, NaN too).
		again := appendState(nil, &st)
		var st2 stationState
		if err := decodeState(again, &st2); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if string(appendState(nil, &st2)) != string(again) {
			t.Fatal("re-encoded record decodes to a different state")
		}
	})
}
