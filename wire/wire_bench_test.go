package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkEncodeEvent is the one encoding of an inventory_update on its way
// to every WebSocket subscriber.
func BenchmarkEncodeEvent(b *testing.B) {
	fields, err := json.Marshal(InventoryUpdate{StationID: "berlin-mitte-0042", Inventory: Inventory{
		AvailableBatteries: 7, BookedBatteries: 1, ChargingBatteries: 3, EmptySlots: 1, TotalSlots: 12,
	}})
	if err != nil {
		b.Fatal(err)
	}
	ts := time.Date(2026, 11, 26, 9, 0, 0, 123456789, time.UTC)
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		buf = EncodeEvent(buf[:0], TypeInventoryUpdate, uint64(i), ts, fields)
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkEncodeEventWithFields adds the json.Marshal of the fields, as an
// event appender does per event.
func BenchmarkEncodeEventWithFields(b *testing.B) {
	ts := time.Date(2026, 11, 26, 9, 0, 0, 123456789, time.UTC)
	ev := InventoryUpdate{StationID: "berlin-mitte-0042", Inventory: Inventory{AvailableBatteries: 7, TotalSlots: 12}}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		ev.AvailableBatteries = i % 12
		fields, err := json.Marshal(ev)
		if err != nil {
			b.Fatal(err)
		}
		buf = EncodeEvent(buf[:0], TypeInventoryUpdate, uint64(i), ts, fields)
	}
}

func telemetryPayload(slots int, full bool) []byte {
	var sb strings.Builder
	fmt.Fprintf(&sb, `{"boot_id":"3f2a9c1be0d4","seq":42,"ts":"2026-11-26T09:00:00.123456789Z","full":%t,"slots":[`, full)
	for i := 1; i <= slots; i++ {
		if i > 1 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"slot":%d,"battery_id":"B-%04d","soc":87.5,"soh":97,"temp_c":31.2,"voltage_v":52.1,"charging":true,"door":"closed","locked":true,"fault":""}`, i, i)
	}
	sb.WriteString("]}")
	return []byte(sb.String())
}

// BenchmarkTelemetryDecodeValidate is what the bridge does with every
// telemetry before touching state: decode into a reused value and validate.
func BenchmarkTelemetryDecodeValidate(b *testing.B) {
	for _, c := range []struct {
		name  string
		slots int
		full  bool
	}{{"partial-1slot", 1, false}, {"full-12slots", 12, true}, {"full-40slots", 40, true}} {
		b.Run(c.name, func(b *testing.B) {
			p := telemetryPayload(c.slots, c.full)
			var t Telemetry
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for b.Loop() {
				t = Telemetry{Slots: t.Slots[:0]}
				if err := json.Unmarshal(p, &t); err != nil {
					b.Fatal(err)
				}
				if err := t.Validate(40); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseTopic runs on every station publish.
func BenchmarkParseTopic(b *testing.B) {
	topic := Topic("berlin-mitte-0042", KindTelemetry)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := ParseTopic(topic); !ok {
			b.Fatal("not parsed")
		}
	}
}
