package bridge

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// FuzzHandlePublish feeds arbitrary payloads to every topic kind: the
// bridge must answer with nil or a clear error and never panic, and the
// station's inventory must always add up.
func FuzzHandlePublish(f *testing.F) {
	seeds := []string{
		`{"boot_id":"A","seq":1,"ts":"2026-11-26T10:00:00Z","full":true,"slots":[{"slot":1,"battery_id":"B1","soc":95,"soh":97,"temp_c":30,"voltage_v":52,"charging":false,"door":"closed","locked":true,"fault":""}]}`,
		`{"boot_id":"A","seq":2,"full":false,"slots":[{"slot":2,"battery_id":null,"door":"open"}]}`,
		`{"boot_id":"A","seq":3,"slots":[{"slot":3,"battery_id":"B3","soc":101,"door":"closed"}]}`,
		`{"online":true,"boot_id":"B","slots":4}`,
		`{"online":false,"boot_id":"A"}`,
		`{"id":"c123","ok":true,"error":""}`,
		`{"boot_id":"A","seq":18446744073709551615,"slots":[]}`,
		`[]`, `null`, `{"slots":[{"slot":-1}]}`, "\xff",
		`{"boot_id":"A","seq":4,"slots":[{"slot":1,"battery_id":"\u001b[2J\u001b]0;OWNED\u0007","door":"closed","fault":"\u009b"}]}`,
	}
	for _, s := range seeds {
		for k := range 3 {
			f.Add(uint8(k), []byte(s))
		}
	}
	st, err := store.Open(filepath.Join(f.TempDir(), "swapd.db"), store.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	info := store.Station{ID: "S1", Slots: 4, SecretHash: sha256.Sum256([]byte("x"))}
	if err := st.CreateStation(context.Background(), info); err != nil {
		f.Fatal(err)
	}
	b, err := New(Config{TickInterval: time.Hour}, st, newSink())
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { b.Close() })
	kinds := []wire.TopicKind{wire.KindTelemetry, wire.KindStatus, wire.KindAck}
	f.Fuzz(func(t *testing.T, k uint8, payload []byte) {
		err := publishWait(b, "S1", kinds[int(k)%len(kinds)], payload)
		if err != nil && !errors.Is(err, wire.ErrBadPayload) {
			t.Fatalf("unexpected error kind: %v", err)
		}
		v, err := b.StationView("S1")
		if err != nil {
			t.Fatal(err)
		}
		inv := v.Inventory
		if inv.AvailableBatteries+inv.BookedBatteries+inv.ChargingBatteries+inv.UnavailableBatteries+inv.EmptySlots+inv.FaultedSlots != inv.TotalSlots || inv.TotalSlots != 4 {
			t.Fatalf("inventory %+v does not add up", inv)
		}
	})
}
