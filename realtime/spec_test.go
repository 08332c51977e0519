package realtime

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/swapbridge/swapbridge/wire"
)

const specURL = "file:///docs/asyncapi.yaml"

// loadSpec reads docs/asyncapi.yaml into a schema compiler (JSON Schema
// draft 7, the base of AsyncAPI 3.0 schemas, with format assertions).
func loadSpec(t *testing.T) (*jsonschema.Compiler, map[string]any) {
	t.Helper()
	raw, err := os.ReadFile("../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi version %v, want 3.0.0", doc["asyncapi"])
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatalf("asyncapi.yaml is not JSON-compatible: %v", err)
	}
	jdoc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	c.AssertFormat()
	if err := c.AddResource(specURL, jdoc); err != nil {
		t.Fatal(err)
	}
	return c, doc
}

func TestAsyncAPISchemasMatchMessages(t *testing.T) {
	c, doc := loadSpec(t)
	ts := time.Date(2026, 3, 4, 5, 6, 7, 890000000, time.UTC)
	event := func(typ string, fields any) []byte {
		f, err := json.Marshal(fields)
		if err != nil {
			t.Fatal(err)
		}
		return wire.EncodeEvent(nil, typ, 42, ts, f)
	}
	marshal := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	battery := "B-1234"
	inv := wire.Inventory{AvailableBatteries: 3, BookedBatteries: 1, ChargingBatteries: 2, EmptySlots: 1, FaultedSlots: 1, TotalSlots: 8}
	booked := wire.BatteryBooked{StationID: "s1", Slot: 3, BatteryID: "B-1", BookingID: "bk-1"}
	yes := true
	valid := map[string][][]byte{
		"Hello": {
			marshal(wire.Hello{Type: wire.TypeHello, TS: ts, Channel: "stations", Seq: 0, Recovered: false}),
			marshal(wire.Hello{Type: wire.TypeHello, TS: ts, Channel: "station:s-1.a", Seq: 9, Recovered: true}),
			marshal(wire.Hello{Type: wire.TypeHello, TS: ts, Channel: "user:u1", Seq: 9}),
		},
		"InventoryUpdate": {
			event(wire.TypeInventoryUpdate, wire.InventoryUpdate{StationID: "s1", Inventory: inv}),
			event(wire.TypeInventoryUpdate, wire.InventoryUpdate{StationID: "s1", Inventory: inv, Snapshot: true}),
		},
		"BatteryBooked":    {event(wire.TypeBatteryBooked, booked)},
		"BatteryCollected": {event(wire.TypeBatteryCollected, booked)},
		"BatteryAdded":     {event(wire.TypeBatteryAdded, wire.BatteryAdded{StationID: "s1", Slot: 2, BatteryID: "B-2", SoC: 41.5})},
		"BatteryRemoved": {
			event(wire.TypeBatteryRemoved, wire.BatteryRemoved{StationID: "s1", Slot: 2, BatteryID: "B-2"}),
			event(wire.TypeBatteryRemoved, wire.BatteryRemoved{StationID: "s1", Slot: 2, BatteryID: "B-2", Reason: "no booking"}),
		},
		"StationStatus": {
			event(wire.TypeStationStatus, wire.StationStatus{StationID: "s1", Status: wire.StationOnline, LastSeen: ts}),
			event(wire.TypeStationStatus, wire.StationStatus{StationID: "s1", Status: wire.StationMaintenance}),
		},
		"BookingConfirmed": {
			event(wire.TypeBookingConfirmed, wire.BookingConfirmed{BookingID: "bk-1", StationID: "s1", Slot: 3, BatteryID: "B-1", ExpiresAt: ts}),
			event(wire.TypeBookingConfirmed, wire.BookingConfirmed{BookingID: "bk-1", StationID: "s1", Slot: 3, BatteryID: "B-1"}),
		},
		"BookingReady": {event(wire.TypeBookingReady, wire.BookingReady{BookingID: "bk-1", StationID: "s1", Slot: 3, BatteryID: "B-1", SoC: 95})},
		"Notification": {
			event(wire.TypeNotification, wire.Notification{Title: "Ready", Message: "Your battery is ready", Level: wire.LevelInfo, BookingID: "bk-1"}),
			event(wire.TypeNotification, wire.Notification{Title: "Maintenance", Message: "m", Level: wire.LevelWarning}),
		},
		"Pong": {clientReply(websocket.TextMessage, []byte(`{"type":"ping"}`), false, ts)},
		"Error": {
			clientReply(websocket.TextMessage, []byte(`{`), false, ts),
			clientReply(websocket.TextMessage, []byte(`{"type":"subscribe"}`), false, ts),
			clientReply(websocket.BinaryMessage, []byte(`{}`), false, ts),
			clientReply(websocket.TextMessage, nil, true, ts),
		},
		"Ping": {[]byte(`{"type":"ping"}`)},
		"Status": {
			marshal(wire.Status{Online: true, BootID: "boot-1", TS: ts, AgentVersion: "1.2.3", Slots: 12}),
			marshal(wire.Status{Online: false, BootID: "boot-1"}),
		},
		"Telemetry": {marshal(wire.Telemetry{BootID: "boot-1", Seq: 42, TS: ts, Full: true, Slots: []wire.Slot{
			{Slot: 1, BatteryID: &battery, SoC: 87.5, SoH: 97, TempC: 31.2, VoltageV: 52.1, Charging: true, Door: wire.DoorClosed, Locked: true},
			{Slot: 2, Door: wire.DoorOpen, Fault: "door sensor"},
		}})},
		"Command": {
			marshal(wire.Command{ID: "c1", Action: wire.ActionReserve, Slot: 3, BookingID: "bk-1", ExpiresAt: ts}),
			marshal(wire.Command{ID: "c2", Action: wire.ActionRelease, Slot: 3, BookingID: "bk-1"}),
			marshal(wire.Command{ID: "c3", Action: wire.ActionUnlock, Slot: 3, BookingID: "bk-1"}),
			marshal(wire.Command{ID: "c4", Action: wire.ActionSetAvailability, Slot: 3, Available: &yes}),
			marshal(wire.Command{ID: "c5", Action: wire.ActionSnapshot}),
		},
		"Ack": {
			marshal(wire.Ack{ID: "c1", OK: true}),
			marshal(wire.Ack{ID: "c1", OK: false, Error: "slot 3 is empty"}),
		},
	}
	invalid := map[string][][]byte{
		"Hello":           {[]byte(`{"type":"hello","ts":"2026-03-04T05:06:07Z","channel":"station:","seq":1,"recovered":true}`)},
		"InventoryUpdate": {event(wire.TypeInventoryUpdate, map[string]int{"available_batteries": 1})},
		"BatteryAdded":    {event(wire.TypeBatteryAdded, map[string]any{"station_id": "s1", "slot": 1, "battery_id": "B", "soc": 50, "extra": 1})},
		"Notification":    {event(wire.TypeNotification, wire.Notification{Title: "t", Message: "m", Level: "debug"})},
		"Pong":            {[]byte(`{"type":"pong","ts":"yesterday"}`)},
		"Telemetry":       {[]byte(`{"boot_id":"b","seq":1,"ts":"2026-03-04T05:06:07Z","full":true,"slots":[{"slot":1,"battery_id":null,"soc":0,"soh":0,"temp_c":0,"voltage_v":0,"charging":false,"door":"ajar","locked":false,"fault":""}]}`)},
	}
	schema := func(name string) *jsonschema.Schema {
		t.Helper()
		s, err := c.Compile(specURL + "#/components/schemas/" + name)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		return s
	}
	for name, samples := range valid {
		s := schema(name)
		for _, b := range samples {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s sample %s: %v", name, b, err)
			}
			if err := s.Validate(v); err != nil {
				t.Errorf("%s sample %s does not validate: %v", name, b, err)
			}
		}
	}
	for name, samples := range invalid {
		s := schema(name)
		for _, b := range samples {
			v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("%s sample %s: %v", name, b, err)
			}
			if err := s.Validate(v); err == nil {
				t.Errorf("%s accepted invalid sample %s", name, b)
			}
		}
	}

	// Every message type of the contract has a message in the spec, and
	// every message's schema is covered by samples above.
	comps := doc["components"].(map[string]any)
	names := map[string]string{}
	for key, m := range comps["messages"].(map[string]any) {
		mm := m.(map[string]any)
		names[mm["name"].(string)] = key
		ref := mm["payload"].(map[string]any)["$ref"].(string)
		schemaName := ref[len("#/components/schemas/"):]
		if _, ok := valid[schemaName]; !ok {
			t.Errorf("message %s (schema %s) has no sample in this test", key, schemaName)
		}
	}
	for _, typ := range []string{
		wire.TypeInventoryUpdate, wire.TypeBatteryBooked, wire.TypeBatteryCollected, wire.TypeBatteryAdded,
		wire.TypeBatteryRemoved, wire.TypeStationStatus, wire.TypeBookingConfirmed, wire.TypeBookingReady,
		wire.TypeNotification, wire.TypeHello, wire.TypePing, wire.TypePong, wire.TypeError,
		string(wire.KindStatus), string(wire.KindTelemetry), string(wire.KindCmd), string(wire.KindAck),
	} {
		if _, ok := names[typ]; !ok {
			t.Errorf("no message named %q in docs/asyncapi.yaml", typ)
		}
	}
	// The MQTT channel addresses are the contract's topics.
	channels := doc["channels"].(map[string]any)
	for key, kind := range map[string]wire.TopicKind{"stationStatus": wire.KindStatus, "stationTelemetry": wire.KindTelemetry, "stationCmd": wire.KindCmd, "stationAck": wire.KindAck} {
		if got := channels[key].(map[string]any)["address"]; got != wire.Topic("{sid}", kind) {
			t.Errorf("channel %s address %v, want %s", key, got, wire.Topic("{sid}", kind))
		}
	}
	for key, path := range map[string]string{"wsStations": StationsPath, "wsStation": StationsPath + "{sid}/", "wsNotifications": NotificationsPath} {
		if got := channels[key].(map[string]any)["address"]; got != path {
			t.Errorf("channel %s address %v, want %s", key, got, path)
		}
	}
}
