package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzParseTopic: any topic parses without panicking, and what is accepted
// is exactly swap/v1/stations/{valid id}/{known kind}.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{
		"swap/v1/stations/S1/telemetry", "swap/v1/stations/S1/status", "swap/v1/stations/S1/cmd",
		"swap/v1/stations/S1/ack", "swap/v1/stations/S1/telemetry/x", "swap/v1/stations//telemetry",
		"swap/v1/stations/+/telemetry", "swap/v1/stations/#", "swap/v1/stations/-S/ack",
		"swap/v2/stations/S1/ack", "$SYS/broker/clients", "swap/v1/stations/S1/", "",
		"swap/v1/stations/" + strings.Repeat("a", 65) + "/ack", "swap/v1/stations/a\x00b/ack",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		sid, kind, ok := ParseTopic(topic)
		if !ok {
			if sid != "" || kind != "" {
				t.Fatalf("%q refused but returned %q %q", topic, sid, kind)
			}
			return
		}
		if !ValidID(sid) || CheckID("station id", sid) != nil {
			t.Fatalf("%q accepted with invalid station id %q", topic, sid)
		}
		if Topic(sid, kind) != topic {
			t.Fatalf("%q accepted as (%q, %q), which builds %q", topic, sid, kind, Topic(sid, kind))
		}
		if strings.ContainsAny(sid, "/+#\x00") {
			t.Fatalf("%q: station id %q has a topic metacharacter", topic, sid)
		}
	})
}

// FuzzCheckID: ValidID and CheckID agree, and accepted ids match the
// contract's pattern.
func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"S1", "a", "A.b-c_d", "-a", "_a", ".", "", strings.Repeat("x", 64), strings.Repeat("x", 65), "é", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ok := ValidID(s)
		err := CheckID("station id", s)
		if ok != (err == nil) {
			t.Fatalf("ValidID(%q)=%v but CheckID=%v", s, ok, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidID) || strings.Contains(err.Error(), "\n") || len(err.Error()) > 600 { // the id is quoted and cut at 80 bytes
				t.Fatalf("CheckID(%q) error %q", s, err)
			}
			return
		}
		if len(s) > MaxIDLen || strings.IndexFunc(s, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' || r == '-')
		}) >= 0 || strings.ContainsAny(s[:1], "_.-") {
			t.Fatalf("%q accepted", s)
		}
	})
}

// FuzzTelemetry: any payload decodes or fails cleanly; a telemetry message
// that validates has every slot in range and survives a JSON round trip.
func FuzzTelemetry(f *testing.F) {
	for _, s := range []string{
		`{"boot_id":"A","seq":1,"ts":"2026-11-26T10:00:00Z","full":true,"slots":[{"slot":1,"battery_id":"B1","soc":95,"soh":97,"temp_c":30,"voltage_v":52,"charging":false,"door":"closed","locked":true,"fault":""}]}`,
		`{"boot_id":"A","seq":2,"slots":[{"slot":2,"battery_id":null,"door":"open"}]}`,
		`{"boot_id":"","seq":1}`, `{"boot_id":"A","seq":0}`, `{"boot_id":"A","seq":-1}`,
		`{"boot_id":"A","seq":1e30}`, `{"boot_id":"A","seq":1,"slots":[{"slot":9999,"door":"closed"}]}`,
		`{"boot_id":"A","seq":1,"slots":[{"slot":1,"soc":"high","door":"closed"}]}`,
		`{"boot_id":"A","seq":1,"slots":[{"slot":1,"soc":1e308,"door":"closed"}]}`,
		`{"boot_id":"A","seq":1,"ts":"yesterday"}`, `null`, `[]`, `"x"`, "\xff\xfe", "",
	} {
		f.Add([]byte(s), uint16(0))
	}
	f.Add([]byte(`{"boot_id":"A","seq":1,"slots":[{"slot":5,"door":"closed"}]}`), uint16(4))
	f.Fuzz(func(t *testing.T, payload []byte, slots uint16) {
		var tel Telemetry
		if err := json.Unmarshal(payload, &tel); err != nil {
			return
		}
		err := tel.Validate(int(slots))
		if err != nil {
			if !errors.Is(err, ErrBadPayload) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Validate error %q", err)
			}
			return
		}
		if tel.BootID == "" || tel.Seq == 0 || len(tel.Slots) > MaxSlots {
			t.Fatalf("accepted %+v", tel)
		}
		for _, s := range tel.Slots {
			if s.Slot < 1 || (slots > 0 && s.Slot > int(slots)) || s.SoC < 0 || s.SoC > 100 || (s.Door != DoorOpen && s.Door != DoorClosed) {
				t.Fatalf("accepted slot %+v", s)
			}
		}
		b, err := json.Marshal(tel)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var again Telemetry
		if err := json.Unmarshal(b, &again); err != nil || again.Validate(int(slots)) != nil || again.Seq != tel.Seq || len(again.Slots) != len(tel.Slots) {
			t.Fatalf("round trip of %s: %v", b, err)
		}
	})
}

// FuzzStationPayloads: status, ack and command payloads decode or fail
// without panicking and re-encode to something that decodes the same.
func FuzzStationPayloads(f *testing.F) {
	for _, s := range []string{
		`{"online":true,"boot_id":"B","ts":"2026-11-26T10:00:00Z","agent_version":"1","slots":12}`,
		`{"online":false,"boot_id":"B"}`, `{"id":"c1","ok":false,"error":"slot 3 is empty"}`,
		`{"id":"c1","action":"reserve","slot":3,"booking_id":"b1","expires_at":"2026-11-26T10:15:00Z"}`,
		`{"id":"c2","action":"set_availability","available":false}`, `{"online":"yes"}`, `{"ok":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		check := func(v, again any) {
			if json.Unmarshal(payload, v) != nil {
				return
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatalf("re-encode %T: %v", v, err)
			}
			if err := json.Unmarshal(b, again); err != nil {
				t.Fatalf("decode re-encoded %T %s: %v", v, b, err)
			}
			b2, _ := json.Marshal(again)
			if !bytes.Equal(b, b2) {
				t.Fatalf("%T not stable: %s then %s", v, b, b2)
			}
		}
		check(&Status{}, &Status{})
		check(&Ack{}, &Ack{})
		check(&Command{}, &Command{})
	})
}

// FuzzEncodeEvent: an event frame built from any JSON object is a JSON
// object carrying type, seq and ts, and every field of the object.
func FuzzEncodeEvent(f *testing.F) {
	f.Add(uint8(0), uint64(7), []byte(`{"station_id":"S1","slot":1,"battery_id":"B","soc":40}`))
	f.Add(uint8(1), uint64(0), []byte(`{}`))
	f.Add(uint8(2), uint64(1<<63), []byte(`{"title":"\u00e9","message":"<b>","level":"info"}`))
	types := []string{TypeInventoryUpdate, TypeBatteryAdded, TypeNotification, TypeStationStatus}
	ts := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, k uint8, seq uint64, fields []byte) {
		var obj map[string]json.RawMessage
		if json.Unmarshal(fields, &obj) != nil || obj == nil {
			return
		}
		delete(obj, "type")
		delete(obj, "seq")
		delete(obj, "ts")
		fields, _ = json.Marshal(obj) // compact, as the store's callers pass it
		typ := types[int(k)%len(types)]
		frame := EncodeEvent(nil, typ, seq, ts, fields)
		var got map[string]json.RawMessage
		if err := json.Unmarshal(frame, &got); err != nil {
			t.Fatalf("frame %s is not JSON: %v", frame, err)
		}
		var head struct {
			Type string    `json:"type"`
			Seq  uint64    `json:"seq"`
			TS   time.Time `json:"ts"`
		}
		json.Unmarshal(frame, &head)
		if head.Type != typ || head.Seq != seq || !head.TS.Equal(ts) || len(got) != len(obj)+3 {
			t.Fatalf("frame %s from %s", frame, fields)
		}
	})
}
