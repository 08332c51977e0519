package wire

import (
	"errors"
	"fmt"
	"time"
)

// Status is the retained payload on swap/v1/stations/{sid}/status. The
// connection's Will carries Online=false with the same BootID.
type Status struct {
	Online       bool      `json:"online"`
	BootID       string    `json:"boot_id"`
	TS           time.Time `json:"ts,omitzero"`
	AgentVersion string    `json:"agent_version,omitempty"`
	Slots        int       `json:"slots,omitempty"`
}

// Door states.
const (
	DoorClosed = "closed"
	DoorOpen   = "open"
)

// Slot is one slot's state as reported in telemetry. BatteryID is nil for an
// empty slot.
type Slot struct {
	Slot      int     `json:"slot"`
	BatteryID *string `json:"battery_id"`
	SoC       float64 `json:"soc"`
	SoH       float64 `json:"soh"`
	TempC     float64 `json:"temp_c"`
	VoltageV  float64 `json:"voltage_v"`
	Charging  bool    `json:"charging"`
	Door      string  `json:"door"`
	Locked    bool    `json:"locked"`
	Fault     string  `json:"fault"`
}

// Occupied reports whether a battery is in the slot.
func (s *Slot) Occupied() bool { return s.BatteryID != nil && *s.BatteryID != "" }

// Battery returns the battery id or "".
func (s *Slot) Battery() string {
	if s.BatteryID == nil {
		return ""
	}
	return *s.BatteryID
}

// Telemetry is the payload on swap/v1/stations/{sid}/telemetry. Full=true
// carries every slot; otherwise only the slots that changed.
type Telemetry struct {
	BootID string    `json:"boot_id"`
	Seq    uint64    `json:"seq"`
	TS     time.Time `json:"ts"`
	Full   bool      `json:"full"`
	Slots  []Slot    `json:"slots"`
}

// Command actions.
const (
	ActionReserve         = "reserve"
	ActionRelease         = "release"
	ActionUnlock          = "unlock"
	ActionSetAvailability = "set_availability"
	ActionSnapshot        = "snapshot"
)

// Command is the payload on swap/v1/stations/{sid}/cmd.
type Command struct {
	ID        string    `json:"id"`
	Action    string    `json:"action"`
	Slot      int       `json:"slot,omitempty"`
	BookingID string    `json:"booking_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Available *bool     `json:"available,omitempty"`
}

// Ack is the payload on swap/v1/stations/{sid}/ack.
type Ack struct {
	ID    string `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

// Validation errors for station payloads.
var (
	ErrBadPayload = errors.New("bad payload")
)

// MaxSlots bounds the slot count of one station (the contract's stations have
// 8–40; we leave headroom for larger cabinets).
const MaxSlots = 256

// Validate checks a decoded telemetry message for the contract's invariants.
// slots is the station's provisioned slot count (0 skips the range check).
func (t *Telemetry) Validate(slots int) error {
	if t.BootID == "" || len(t.BootID) > 128 || HasControl(t.BootID) {
		return fmt.Errorf("%w: boot_id must be 1..128 bytes without control characters", ErrBadPayload)
	}
	if t.Seq == 0 {
		return fmt.Errorf("%w: seq must be ≥ 1", ErrBadPayload)
	}
	if len(t.Slots) > MaxSlots {
		return fmt.Errorf("%w: %d slots exceed the limit of %d", ErrBadPayload, len(t.Slots), MaxSlots)
	}
	for i := range t.Slots {
		if err := t.Slots[i].Validate(slots); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks one slot's ranges. slots is the station's slot count (0
// skips the upper bound check).
func (s *Slot) Validate(slots int) error {
	if s.Slot < 1 || (slots > 0 && s.Slot > slots) || s.Slot > MaxSlots {
		return fmt.Errorf("%w: slot %d out of range", ErrBadPayload, s.Slot)
	}
	if s.SoC < 0 || s.SoC > 100 || s.SoH < 0 || s.SoH > 100 {
		return fmt.Errorf("%w: slot %d: soc and soh must be within 0..100", ErrBadPayload, s.Slot)
	}
	if s.TempC < -100 || s.TempC > 300 || s.VoltageV < 0 || s.VoltageV > 10000 {
		return fmt.Errorf("%w: slot %d: temp_c or voltage_v out of range", ErrBadPayload, s.Slot)
	}
	if s.Door != DoorClosed && s.Door != DoorOpen {
		return fmt.Errorf("%w: slot %d: door must be \"open\" or \"closed\"", ErrBadPayload, s.Slot)
	}
	if s.BatteryID != nil && len(*s.BatteryID) > 128 {
		return fmt.Errorf("%w: slot %d: battery_id too long", ErrBadPayload, s.Slot)
	}
	if len(s.Fault) > 256 {
		return fmt.Errorf("%w: slot %d: fault too long", ErrBadPayload, s.Slot)
	}
	if s.BatteryID != nil && HasControl(*s.BatteryID) {
		return fmt.Errorf("%w: slot %d: battery_id has a control character", ErrBadPayload, s.Slot)
	}
	if HasControl(s.Fault) {
		return fmt.Errorf("%w: slot %d: fault has a control character", ErrBadPayload, s.Slot)
	}
	return nil
}

// HasControl reports whether s contains a control character: C0 (U+0000 to
// U+001F), DEL (U+007F) or C1 (U+0080 to U+009F, UTF-8 0xC2 0x80..0x9F).
// Such text would reach terminals and apps verbatim (an operator's log
// viewer, a notification), where escape sequences can rewrite the screen.
// Invalid UTF-8 is not its concern (the JSON decoders replace it).
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return true
		case c == 0xc2 && i+1 < len(s) && s[i+1] >= 0x80 && s[i+1] <= 0x9f:
			return true
		}
	}
	return false
}
