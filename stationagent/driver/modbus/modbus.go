// Package modbus drives a cabinet controller over Modbus TCP or RTU
// (github.com/simonvetter/modbus), with the register map in the config.
//
// Every slot has a block of registers (battery id, SoC, SoH, temperature,
// voltage, fault code) at registers.base + (slot-1)*registers.stride and a
// block of coils (door, lock, indicator, availability, charging) at
// coils.base + (slot-1)*coils.stride. See configs/modbus-map.example.yaml.
//
// All methods block on the serial line or TCP connection for at most
// Config.Timeout per request; the driver owns no goroutine. A failed request
// closes the link; the next call reopens it.
package modbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"

	mb "github.com/simonvetter/modbus"

	"github.com/swapbridge/swapbridge/internal/yamlkeys"
	"github.com/swapbridge/swapbridge/wire"
)

// Config configures the link and the register map.
type Config struct {
	// URL is tcp://host:port or rtu:///dev/ttyUSB0.
	URL string `yaml:"url"`
	// Speed is the RTU baud rate. Default 19200.
	Speed uint `yaml:"speed"`
	// Parity is none, even or odd (RTU). Default none.
	Parity string `yaml:"parity"`
	// UnitID is the Modbus unit (slave) id. Default 1.
	UnitID uint8 `yaml:"unit_id"`
	// Timeout bounds one request. Default 1s.
	Timeout time.Duration `yaml:"timeout"`
	// MapFile is a YAML file holding the register map; used when Map is
	// empty. Relative paths are resolved against the agent's config file.
	MapFile string `yaml:"map_file"`
	// Map is the register map inline.
	Map Map `yaml:"map"`
}

// Map describes where each slot's values live.
type Map struct {
	// Slots is the number of slots.
	Slots int `yaml:"slots"`
	// Registers is the per-slot register block.
	Registers Registers `yaml:"registers"`
	// Coils is the per-slot coil block.
	Coils Coils `yaml:"coils"`
	// StationAvailableCoil, when set, is the coil for station-level
	// availability (set_availability without a slot).
	StationAvailableCoil *uint16 `yaml:"station_available_coil"`
	// FaultCodes names fault codes; an unnamed non-zero code is reported as
	// "fault_<code>".
	FaultCodes map[int]string `yaml:"fault_codes"`
}

// Registers is a block of 16-bit registers per slot. Offsets are relative to
// the slot's block.
type Registers struct {
	// Type is holding or input. Default holding.
	Type   string `yaml:"type"`
	Base   uint16 `yaml:"base"`
	Stride uint16 `yaml:"stride"`
	// BatteryID is ASCII, two characters per register, NUL padded; all
	// zero means the slot is empty.
	BatteryID Text  `yaml:"battery_id"`
	SoC       Field `yaml:"soc"`
	SoH       Field `yaml:"soh"`
	TempC     Field `yaml:"temp_c"`
	VoltageV  Field `yaml:"voltage_v"`
	Fault     Field `yaml:"fault"`
}

// Field is one register: value = raw * Scale (raw as int16 when Signed).
type Field struct {
	Offset uint16  `yaml:"offset"`
	Scale  float64 `yaml:"scale"`
	Signed bool    `yaml:"signed"`
}

// Text is a run of registers holding ASCII.
type Text struct {
	Offset uint16 `yaml:"offset"`
	Words  uint16 `yaml:"words"`
}

// Coils is a block of coils per slot. Door: 1 = open. Lock: 1 = locked,
// writing 0 unlocks. Indicator and Available: 1 = on. Charging: 1 = charging.
type Coils struct {
	Base      uint16 `yaml:"base"`
	Stride    uint16 `yaml:"stride"`
	Door      uint16 `yaml:"door"`
	Lock      uint16 `yaml:"lock"`
	Indicator uint16 `yaml:"indicator"`
	Available uint16 `yaml:"available"`
	Charging  uint16 `yaml:"charging"`
}

// Validate checks the link settings and the map (loading MapFile when the
// inline map is empty).
func (c *Config) Validate() error {
	if c.URL == "" {
		return errors.New("url is required (tcp://host:port or rtu:///dev/ttyX)")
	}
	if !strings.HasPrefix(c.URL, "tcp://") && !strings.HasPrefix(c.URL, "rtu://") {
		return fmt.Errorf("url %q: want tcp:// or rtu://", c.URL)
	}
	switch c.Parity {
	case "", "none", "even", "odd":
	default:
		return fmt.Errorf("parity %q: want none, even or odd", c.Parity)
	}
	if c.Map.Slots == 0 && c.MapFile != "" {
		m, err := LoadMap(c.MapFile)
		if err != nil {
			return err
		}
		c.Map = m
	}
	return c.Map.Validate()
}

// LoadMap reads a register map from a YAML file.
func LoadMap(path string) (Map, error) {
	var m Map
	b, err := os.ReadFile(path)
	if err != nil {
		return m, fmt.Errorf("map_file: %v", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return m, fmt.Errorf("map_file %s: %s", path, yamlkeys.Describe(err, reflect.TypeFor[Map]()))
	}
	return m, nil
}

// Validate checks that every offset lies inside its block.
func (m Map) Validate() error {
	if m.Slots < 1 || m.Slots > wire.MaxSlots {
		return fmt.Errorf("map: slots must be within 1..%d", wire.MaxSlots)
	}
	r := m.Registers
	switch r.Type {
	case "", "holding", "input":
	default:
		return fmt.Errorf("map: registers.type %q: want holding or input", r.Type)
	}
	if r.Stride == 0 || r.Stride > 125 {
		return errors.New("map: registers.stride must be within 1..125")
	}
	for name, f := range map[string]Field{"soc": r.SoC, "soh": r.SoH, "temp_c": r.TempC, "voltage_v": r.VoltageV, "fault": r.Fault} {
		if f.Offset >= r.Stride {
			return fmt.Errorf("map: registers.%s.offset %d outside the stride %d", name, f.Offset, r.Stride)
		}
	}
	if r.BatteryID.Words == 0 || r.BatteryID.Offset+r.BatteryID.Words > r.Stride {
		return errors.New("map: registers.battery_id needs words ≥ 1 inside the stride")
	}
	if int(r.Base)+int(r.Stride)*m.Slots > 65536 {
		return errors.New("map: register blocks exceed the address space")
	}
	c := m.Coils
	if c.Stride == 0 || c.Stride > 2000 {
		return errors.New("map: coils.stride must be within 1..2000")
	}
	for name, off := range map[string]uint16{"door": c.Door, "lock": c.Lock, "indicator": c.Indicator, "available": c.Available, "charging": c.Charging} {
		if off >= c.Stride {
			return fmt.Errorf("map: coils.%s %d outside the stride %d", name, off, c.Stride)
		}
	}
	if int(c.Base)+int(c.Stride)*m.Slots > 65536 {
		return errors.New("map: coil blocks exceed the address space")
	}
	return nil
}

// ErrNoSlot is returned for a slot number outside the map.
var ErrNoSlot = errors.New("modbus: no such slot")

// Driver talks to one Modbus unit. It is safe for concurrent use; requests
// are serialised.
type Driver struct {
	mu     sync.Mutex
	cfg    Config
	client *mb.ModbusClient
	open   bool
	closed bool
}

// New validates cfg and prepares the client. The link is opened on first use.
func New(cfg Config) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.UnitID == 0 {
		cfg.UnitID = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Speed == 0 {
		cfg.Speed = 19200
	}
	parity := mb.PARITY_NONE
	switch cfg.Parity {
	case "even":
		parity = mb.PARITY_EVEN
	case "odd":
		parity = mb.PARITY_ODD
	}
	client, err := mb.NewClient(&mb.ClientConfiguration{
		URL:     cfg.URL,
		Speed:   cfg.Speed,
		Parity:  parity,
		Timeout: cfg.Timeout,
		Logger:  quietLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("modbus: %s: %w", cfg.URL, err)
	}
	return &Driver{cfg: cfg, client: client}, nil
}

// ensure opens the link. Called with mu held.
func (d *Driver) ensure() error {
	if d.closed {
		return errors.New("modbus: driver closed")
	}
	if d.open {
		return nil
	}
	if err := d.client.Open(); err != nil {
		return fmt.Errorf("modbus: open %s: %w", d.cfg.URL, err)
	}
	if err := d.client.SetUnitId(d.cfg.UnitID); err != nil {
		_ = d.client.Close()
		return fmt.Errorf("modbus: unit id: %w", err)
	}
	d.open = true
	return nil
}

// fail closes the link after an error so the next call reopens it, unless
// the error is a Modbus exception (the link itself is fine).
func (d *Driver) fail(err error) {
	var mbErr mb.Error
	if errors.As(err, &mbErr) && mbErr != mb.ErrRequestTimedOut && mbErr != mb.ErrBadTransactionId && mbErr != mb.ErrProtocolError {
		return
	}
	_ = d.client.Close()
	d.open = false
}

func (d *Driver) regType() mb.RegType {
	if d.cfg.Map.Registers.Type == "input" {
		return mb.INPUT_REGISTER
	}
	return mb.HOLDING_REGISTER
}

// ReadSlots reads every slot's register and coil block.
func (d *Driver) ReadSlots(ctx context.Context) ([]wire.Slot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ensure(); err != nil {
		return nil, err
	}
	m := d.cfg.Map
	out := make([]wire.Slot, m.Slots)
	for i := 0; i < m.Slots; i++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		regs, err := d.client.ReadRegisters(m.Registers.Base+uint16(i)*m.Registers.Stride, m.Registers.Stride, d.regType())
		if err != nil {
			d.fail(err)
			return nil, fmt.Errorf("modbus: slot %d registers: %w", i+1, err)
		}
		coils, err := d.client.ReadCoils(m.Coils.Base+uint16(i)*m.Coils.Stride, m.Coils.Stride)
		if err != nil {
			d.fail(err)
			return nil, fmt.Errorf("modbus: slot %d coils: %w", i+1, err)
		}
		out[i] = m.decode(i+1, regs, coils)
	}
	return out, nil
}

func (m Map) decode(n int, regs []uint16, coils []bool) wire.Slot {
	r := m.Registers
	s := wire.Slot{
		Slot:     n,
		SoC:      clamp(r.SoC.value(regs), 0, 100),
		SoH:      clamp(r.SoH.value(regs), 0, 100),
		TempC:    clamp(r.TempC.value(regs), -100, 300),
		VoltageV: clamp(r.VoltageV.value(regs), 0, 10000),
		Door:     wire.DoorClosed,
		Locked:   coils[m.Coils.Lock],
		Charging: coils[m.Coils.Charging],
	}
	if coils[m.Coils.Door] {
		s.Door = wire.DoorOpen
	}
	if code := int(regs[r.Fault.Offset]); code != 0 {
		if name, ok := m.FaultCodes[code]; ok {
			s.Fault = name
		} else {
			s.Fault = fmt.Sprintf("fault_%d", code)
		}
	}
	if id := decodeText(regs[r.BatteryID.Offset : r.BatteryID.Offset+r.BatteryID.Words]); id != "" {
		s.BatteryID = &id
	}
	return s
}

func (f Field) value(regs []uint16) float64 {
	scale := f.Scale
	if scale == 0 {
		scale = 1
	}
	raw := regs[f.Offset]
	if f.Signed {
		return math.Round(float64(int16(raw))*scale*1000) / 1000
	}
	return math.Round(float64(raw)*scale*1000) / 1000
}

func clamp(v, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, v)) }

// decodeText turns big-endian ASCII register pairs into a string, stopping
// at the first NUL and dropping anything outside printable ASCII.
func decodeText(words []uint16) string {
	b := make([]byte, 0, 2*len(words))
	for _, w := range words {
		b = append(b, byte(w>>8), byte(w))
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	out := b[:0]
	for _, c := range b {
		if c > ' ' && c < 0x7f {
			out = append(out, c)
		}
	}
	return string(out)
}

// EncodeText is the inverse of the battery id decoding, for controllers and
// tests: ASCII two characters per register, NUL padded to words.
func EncodeText(s string, words int) []uint16 {
	out := make([]uint16, words)
	for i := 0; i < len(s) && i < 2*words; i++ {
		if i%2 == 0 {
			out[i/2] |= uint16(s[i]) << 8
		} else {
			out[i/2] |= uint16(s[i])
		}
	}
	return out
}

func (d *Driver) writeCoil(slot int, off uint16, v bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.cfg.Map
	if slot < 1 || slot > m.Slots {
		return fmt.Errorf("%w %d (1..%d)", ErrNoSlot, slot, m.Slots)
	}
	if err := d.ensure(); err != nil {
		return err
	}
	addr := m.Coils.Base + uint16(slot-1)*m.Coils.Stride + off
	if err := d.client.WriteCoil(addr, v); err != nil {
		d.fail(err)
		return fmt.Errorf("modbus: write coil %d: %w", addr, err)
	}
	return nil
}

// Unlock clears the slot's lock coil.
func (d *Driver) Unlock(ctx context.Context, slot int) error {
	return d.writeCoil(slot, d.cfg.Map.Coils.Lock, false)
}

// Lock sets the slot's lock coil.
func (d *Driver) Lock(ctx context.Context, slot int) error {
	return d.writeCoil(slot, d.cfg.Map.Coils.Lock, true)
}

// SetIndicator writes the slot's indicator coil.
func (d *Driver) SetIndicator(ctx context.Context, slot int, on bool) error {
	return d.writeCoil(slot, d.cfg.Map.Coils.Indicator, on)
}

// SetAvailability writes the slot's availability coil, or the station coil
// when slot is 0 (an error when the map has none).
func (d *Driver) SetAvailability(ctx context.Context, slot int, available bool) error {
	if slot != 0 {
		return d.writeCoil(slot, d.cfg.Map.Coils.Available, available)
	}
	if d.cfg.Map.StationAvailableCoil == nil {
		// Station level without a station coil: every slot's coil.
		for n := 1; n <= d.cfg.Map.Slots; n++ {
			if err := d.writeCoil(n, d.cfg.Map.Coils.Available, available); err != nil {
				return err
			}
		}
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.ensure(); err != nil {
		return err
	}
	if err := d.client.WriteCoil(*d.cfg.Map.StationAvailableCoil, available); err != nil {
		d.fail(err)
		return fmt.Errorf("modbus: write station coil: %w", err)
	}
	return nil
}

// Close closes the link. It is idempotent.
func (d *Driver) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.open {
		d.open = false
		return d.client.Close()
	}
	return nil
}
