package bridge

import (
	"errors"
	"reflect"
	"testing"

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
			err := e.b.HandlePublish("S1", c.kind, []byte(c.payload))
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
