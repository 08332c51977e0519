package wire

import (
	"strconv"
	"time"
)

// Event types on station channels.
const (
	TypeInventoryUpdate  = "inventory_update"
	TypeBatteryBooked    = "battery_booked"
	TypeBatteryCollected = "battery_collected"
	TypeBatteryAdded     = "battery_added"
	TypeBatteryRemoved   = "battery_removed" // removal without a booking: an operator alert
	TypeStationStatus    = "station_status"
)

// Event types on user channels.
const (
	TypeBookingConfirmed = "booking_confirmed"
	TypeBookingReady     = "booking_ready"
	TypeNotification     = "notification"
)

// Control message types.
const (
	TypeHello = "hello"
	TypePing  = "ping"
	TypePong  = "pong"
	TypeError = "error"
)

// Station status values.
const (
	StationOnline      = "online"
	StationOffline     = "offline"
	StationMaintenance = "maintenance"
	StationFaulted     = "faulted"
)

// Notification levels.
const (
	LevelInfo    = "info"
	LevelWarning = "warning"
	LevelError   = "error"
)

// Inventory holds the counts of inventory_update (and of the HTTP station view).
type Inventory struct {
	AvailableBatteries int `json:"available_batteries"`
	BookedBatteries    int `json:"booked_batteries"`
	ChargingBatteries  int `json:"charging_batteries"`
	// UnavailableBatteries are batteries that would be available or
	// charging but whose station is offline or in maintenance: nothing
	// can be booked there (the station's status says why).
	UnavailableBatteries int `json:"unavailable_batteries"`
	EmptySlots           int `json:"empty_slots"`
	FaultedSlots         int `json:"faulted_slots"`
	TotalSlots           int `json:"total_slots"`
}

// InventoryUpdate is the fields of an inventory_update event.
type InventoryUpdate struct {
	StationID string `json:"station_id"`
	Inventory
	Snapshot bool `json:"snapshot,omitempty"`
}

// BatteryBooked is the fields of battery_booked and battery_collected.
type BatteryBooked struct {
	StationID string `json:"station_id"`
	Slot      int    `json:"slot"`
	BatteryID string `json:"battery_id"`
	BookingID string `json:"booking_id"`
}

// BatteryAdded is the fields of battery_added.
type BatteryAdded struct {
	StationID string  `json:"station_id"`
	Slot      int     `json:"slot"`
	BatteryID string  `json:"battery_id"`
	SoC       float64 `json:"soc"`
}

// BatteryRemoved is the fields of battery_removed: a battery left a slot
// without a booking being collected there (theft, technician, or hardware
// fault). It is an operator alert.
type BatteryRemoved struct {
	StationID string `json:"station_id"`
	Slot      int    `json:"slot"`
	BatteryID string `json:"battery_id"`
	Reason    string `json:"reason,omitempty"`
}

// StationStatus is the fields of station_status.
type StationStatus struct {
	StationID string    `json:"station_id"`
	Status    string    `json:"status"`
	LastSeen  time.Time `json:"last_seen,omitzero"`
}

// BookingConfirmed is the fields of booking_confirmed.
type BookingConfirmed struct {
	BookingID string    `json:"booking_id"`
	StationID string    `json:"station_id"`
	Slot      int       `json:"slot"`
	BatteryID string    `json:"battery_id"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// BookingReady is the fields of booking_ready.
type BookingReady struct {
	BookingID string  `json:"booking_id"`
	StationID string  `json:"station_id"`
	Slot      int     `json:"slot"`
	BatteryID string  `json:"battery_id"`
	SoC       float64 `json:"soc"`
}

// Notification is the fields of notification.
type Notification struct {
	Title     string `json:"title"`
	Message   string `json:"message"`
	Level     string `json:"level"`
	BookingID string `json:"booking_id,omitempty"`
}

// Hello is the first message on every WebSocket connection.
type Hello struct {
	Type      string    `json:"type"`
	TS        time.Time `json:"ts"`
	Channel   string    `json:"channel"`
	Seq       uint64    `json:"seq"`
	Recovered bool      `json:"recovered"`
}

// Pong answers a client's {"type":"ping"}.
type Pong struct {
	Type string    `json:"type"`
	TS   time.Time `json:"ts"`
}

// ErrorMsg is sent to a client whose message could not be handled; the
// connection stays up.
type ErrorMsg struct {
	Type    string    `json:"type"`
	TS      time.Time `json:"ts"`
	Code    string    `json:"code"`
	Message string    `json:"message"`
}

// TimeFormat is the timestamp format of every event: RFC 3339 in UTC with
// nanoseconds, which sorts as text.
const TimeFormat = time.RFC3339Nano

// EncodeEvent builds the wire frame of an event:
// {"type":typ,"seq":seq,"ts":ts, ...fields}. fields must be a JSON object
// (as produced by json.Marshal of one of the field structs above); its
// members are appended after ts. The result is appended to dst.
func EncodeEvent(dst []byte, typ string, seq uint64, ts time.Time, fields []byte) []byte {
	dst = append(dst, `{"type":`...)
	dst = strconv.AppendQuote(dst, typ)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"ts":"`...)
	dst = ts.UTC().AppendFormat(dst, TimeFormat)
	dst = append(dst, '"')
	// fields is "{...}" or "{}"; splice its members in.
	if len(fields) > 2 {
		dst = append(dst, ',')
		dst = append(dst, fields[1:]...)
	} else {
		dst = append(dst, '}')
	}
	return dst
}
