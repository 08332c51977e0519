package bridge

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/wire"
)

// refTelemetry is what encoding/json makes of payload.
func refTelemetry(payload []byte) (wire.Telemetry, error) {
	var t wire.Telemetry
	err := json.Unmarshal(payload, &t)
	return t, err
}

func sameTelemetry(a, b *wire.Telemetry) bool {
	if len(a.Slots) == 0 && len(b.Slots) == 0 {
		a2, b2 := *a, *b
		a2.Slots, b2.Slots = nil, nil
		return reflect.DeepEqual(a2, b2)
	}
	return reflect.DeepEqual(a, b)
}

// checkDecode decodes payload into a reused struct holding stale slots, as
// handleTelemetry does, and compares with encoding/json.
func checkDecode(t *testing.T, payload []byte) (fast bool) {
	t.Helper()
	stale := "STALE"
	buf := &wire.Telemetry{Slots: make([]wire.Slot, 3, 16)}
	for i := range buf.Slots {
		buf.Slots[i] = wire.Slot{Slot: 99, BatteryID: &stale, SoC: 1, Door: "x", Fault: "f", Locked: true}
	}
	slots := buf.Slots[:cap(buf.Slots)]
	clear(slots)
	*buf = wire.Telemetry{Slots: slots[:0]}
	var probe wire.Telemetry
	fast = fastTelemetry(payload, &probe)
	err := decodeTelemetry(payload, buf)
	want, werr := refTelemetry(payload)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: error %v, encoding/json says %v", payload, err, werr)
	}
	if fast && werr != nil {
		t.Fatalf("%q: fast path accepted what encoding/json rejects: %v", payload, werr)
	}
	if err == nil && !sameTelemetry(buf, &want) {
		t.Fatalf("%q:\n got %+v\nwant %+v", payload, *buf, want)
	}
	return fast
}

func TestDecodeTelemetry(t *testing.T) {
	full := `{"boot_id":"b-1","seq":42,"ts":"2026-11-26T10:00:00.123456789+01:00","full":true,"slots":[` +
		`{"slot":1,"battery_id":"B-1234","soc":87.5,"soh":97.0,"temp_c":31.2,"voltage_v":52.1,"charging":true,"door":"closed","locked":true,"fault":""},` +
		`{"slot":2,"battery_id":null,"soc":0,"soh":-1e-3,"temp_c":-0.5E+2,"voltage_v":0,"charging":false,"door":"open","locked":false,"fault":"overheat"}]}`
	cases := []struct {
		payload string
		fast    bool
	}{
		{full, true},
		{" \n\t" + strings.ReplaceAll(full, ",", " ,\r\n ") + "\n", true},
		{`{"boot_id":"b","seq":1,"ts":"2026-11-26T10:00:00Z","full":false,"slots":[]}`, true},
		{`{"boot_id":"b","seq":1,"ts":"2026-11-26T10:00:00Z","full":false,"slots":[{}]}`, true},
		{`{}`, true},
		{`{"slots":[{"slot":-0}]}`, true},
		// Handed to encoding/json: same result or same failure.
		{`{"boot_id":"b\u0041","seq":1}`, false},
		{`{"boot_id":"bé","seq":1}`, false},
		{`{"Boot_ID":"b","seq":1}`, false},
		{`{"boot_id":"b","extra":{"x":[1,2]},"seq":1}`, false},
		{`{"boot_id":"a","boot_id":"b"}`, false},
		{`{"slots":[{"slot":1,"soc":5,"soc":6}]}`, false},
		{`{"slots":[{"slot":1,"soc":5}],"slots":[{"slot":2}]}`, false},
		{`{"slots":null}`, false},
		{`{"full":null}`, false},
		{`{"ts":null}`, false},
		{`{"seq":1.0}`, false},
		{`{"seq":-1}`, false},
		{`{"seq":18446744073709551616}`, false},
		{`{"seq":01}`, false},
		{`{"slots":[{"soc":1e400}]}`, false},
		{`{"slots":[{"soc":.5}]}`, false},
		{`{"slots":[{"soc":5.}]}`, false},
		{`{"slots":[{"soc":+5}]}`, false},
		{`{"slots":[{"soc":"5"}]}`, false},
		{`{"slots":[{"battery_id":nul}]}`, false},
		{`{"ts":"2026-11-26 10:00:00"}`, false},
		{`{"seq":1}x`, false},
		{"{\"seq\":1}\x00", false},
		{`{"seq":1,}`, false},
		{`{"seq":1`, false},
		{`[]`, false},
		{``, false},
	}
	for _, c := range cases {
		if fast := checkDecode(t, []byte(c.payload)); fast != c.fast {
			t.Errorf("%q: fast path %v, want %v", c.payload, fast, c.fast)
		}
	}
}

func FuzzDecodeTelemetry(f *testing.F) {
	f.Add([]byte(`{"boot_id":"b-1","seq":42,"ts":"2026-11-26T10:00:00Z","full":true,"slots":[{"slot":1,"battery_id":"B-1","soc":87.5,"soh":97,"temp_c":31.2,"voltage_v":52.1,"charging":true,"door":"closed","locked":true,"fault":""},{"slot":2,"battery_id":null}]}`))
	f.Add([]byte(`{"seq":1e2,"slots":[{"soc":-0.0e-1}]}`))
	f.Add([]byte(`{"boot_id":"a","boot_id":"b"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		checkDecode(t, payload)
	})
}

func BenchmarkDecodeTelemetry(b *testing.B) {
	payload := []byte(`{"boot_id":"0f7c1e9a-5b2d-4c47-9f1e-2a8b6d3c4e5f","seq":42,"ts":"2026-11-26T10:00:00.123456789Z","full":false,"slots":[{"slot":3,"battery_id":"B-1234","soc":87.5,"soh":97.0,"temp_c":31.2,"voltage_v":52.1,"charging":true,"door":"closed","locked":true,"fault":""}]}`)
	for _, impl := range []string{"scanner", "encoding/json"} {
		b.Run(impl, func(b *testing.B) {
			t := &wire.Telemetry{}
			b.ReportAllocs()
			for b.Loop() {
				slots := t.Slots[:cap(t.Slots)]
				clear(slots)
				*t = wire.Telemetry{Slots: slots[:0]}
				var err error
				if impl == "scanner" {
					err = decodeTelemetry(payload, t)
				} else {
					err = json.Unmarshal(payload, t)
				}
				if err != nil || len(t.Slots) != 1 {
					b.Fatal(err)
				}
			}
		})
	}
}
