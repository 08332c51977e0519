// Package sim is a simulated battery-swap cabinet for demos and tests.
//
// Batteries charge on a CC-CV like curve (fast up to 80 %, slower towards
// full), temperature follows the charge current, faults appear at a
// configurable rate, and a simulated rider plays along: after an unlock the
// battery is taken and the door closes again; now and then a rider returns a
// lower-SoC battery into an empty slot. With the same seed and the same
// sequence of clock readings the simulation is identical.
//
// Simulated time advances only when ReadSlots is called, by the wall time
// elapsed since the previous call multiplied by Config.Speed. No call blocks
// and the driver owns no goroutine.
package sim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Config configures the simulation. Zero values mean the documented default.
type Config struct {
	// Slots is the number of slots. Default 12.
	Slots int `yaml:"slots"`
	// Seed makes the simulation deterministic. 0 lets the agent derive one
	// from the station id.
	Seed uint64 `yaml:"seed"`
	// Speed is simulated seconds per wall second (charge rate and rider
	// timing multiplier). Default 1.
	Speed float64 `yaml:"speed"`
	// FaultRate is the expected number of faults per occupied slot per
	// simulated hour. 0 means no faults.
	FaultRate float64 `yaml:"fault_rate"`
	// FaultDuration is how long a fault lasts in simulated time. Default 10m.
	FaultDuration time.Duration `yaml:"fault_duration"`
	// ReturnEvery is the mean simulated time between riders returning a
	// battery into an empty slot. Default 20m; negative: never.
	ReturnEvery time.Duration `yaml:"return_every"`
	// TakeAfter is the simulated time between an unlock and the rider taking
	// the battery and closing the door. Default 15s.
	TakeAfter time.Duration `yaml:"take_after"`
	// Occupied is the number of slots holding a battery at start. Default
	// three quarters of the slots; negative: none.
	Occupied int `yaml:"occupied"`
}

// Validate reports a configuration the simulation cannot run.
func (c Config) Validate() error {
	if c.Slots < 0 || c.Slots > wire.MaxSlots {
		return fmt.Errorf("slots must be within 1..%d", wire.MaxSlots)
	}
	if c.Speed < 0 || c.FaultRate < 0 || c.FaultDuration < 0 || c.TakeAfter < 0 {
		return errors.New("speed, fault_rate, fault_duration and take_after must not be negative")
	}
	if c.Occupied > c.withDefaults().Slots {
		return errors.New("occupied exceeds slots")
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Slots == 0 {
		c.Slots = 12
	}
	if c.Speed == 0 {
		c.Speed = 1
	}
	if c.FaultDuration == 0 {
		c.FaultDuration = 10 * time.Minute
	}
	if c.ReturnEvery == 0 {
		c.ReturnEvery = 20 * time.Minute
	}
	if c.TakeAfter == 0 {
		c.TakeAfter = 15 * time.Second
	}
	if c.Occupied == 0 {
		c.Occupied = c.Slots - c.Slots/4
	}
	if c.Occupied < 0 {
		c.Occupied = 0
	}
	return c
}

// ErrNoSlot is returned for a slot number outside 1..Slots.
var ErrNoSlot = errors.New("sim: no such slot")

const (
	ambientC   = 25.0
	fullRate   = 80.0 / 3600 // %/s at full current: 0→80 % in an hour
	tauTempSec = 300.0
	step       = time.Second
)

type slot struct {
	battery   string
	soc, soh  float64
	temp      float64
	current   float64 // 0..1 of full charge current
	door      string
	locked    bool
	fault     string
	faultEnd  time.Duration
	takeAt    time.Duration // when >0: the rider takes the battery (or closes the door) then
	indicator bool
	available bool
}

// Driver is the simulated cabinet. It is safe for concurrent use.
type Driver struct {
	mu        sync.Mutex
	cfg       Config
	now       func() time.Time
	rng       *rand.Rand
	last      time.Time
	carry     time.Duration // wall*speed not yet simulated
	simT      time.Duration // simulated time since start
	slots     []slot
	available bool
	nextID    int
}

// New returns a simulation started at now() (time.Now when nil).
func New(cfg Config, now func() time.Time) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if now == nil {
		now = time.Now
	}
	d := &Driver{
		cfg:       cfg,
		now:       now,
		rng:       rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x5eed5eed)),
		last:      now(),
		slots:     make([]slot, cfg.Slots),
		available: true,
		nextID:    1000,
	}
	// Choose the occupied slots deterministically.
	perm := d.rng.Perm(cfg.Slots)
	for i := range d.slots {
		d.slots[i] = slot{door: wire.DoorClosed, locked: true, temp: ambientC, available: true}
	}
	for _, i := range perm[:cfg.Occupied] {
		s := &d.slots[i]
		s.battery = d.newBatteryID()
		s.soc = 20 + d.rng.Float64()*80
		s.soh = 80 + d.rng.Float64()*20
		s.temp = ambientC + d.rng.Float64()*3
	}
	return d, nil
}

func (d *Driver) newBatteryID() string {
	d.nextID += 1 + d.rng.IntN(50)
	return fmt.Sprintf("B-%d", d.nextID)
}

// advance runs the simulation up to now. Called with mu held.
func (d *Driver) advance() {
	now := d.now()
	wall := now.Sub(d.last)
	d.last = now
	if wall <= 0 {
		return
	}
	if wall > 24*time.Hour { // after a suspend: do not spin for days
		wall = 24 * time.Hour
	}
	d.carry += time.Duration(float64(wall) * d.cfg.Speed)
	for d.carry >= step {
		d.carry -= step
		d.simT += step
		d.tick(step.Seconds())
	}
}

func (d *Driver) tick(dt float64) {
	var pFault float64
	if d.cfg.FaultRate > 0 {
		pFault = d.cfg.FaultRate * dt / 3600
	}
	for i := range d.slots {
		s := &d.slots[i]
		if s.takeAt > 0 && d.simT >= s.takeAt {
			// The rider takes the battery (if any) and closes the door.
			s.takeAt = 0
			*s = slot{door: wire.DoorClosed, locked: true, temp: s.temp, indicator: s.indicator, available: s.available}
		}
		if s.fault != "" && d.simT >= s.faultEnd {
			s.fault = ""
		}
		if s.battery == "" {
			s.current = 0
			s.temp += (ambientC - s.temp) * dt / tauTempSec
			continue
		}
		if s.fault == "" && pFault > 0 && d.rng.Float64() < pFault {
			if d.rng.IntN(2) == 0 {
				s.fault = "overtemp"
				s.temp = 52 + d.rng.Float64()*6
			} else {
				s.fault = "bms_comm"
			}
			s.faultEnd = d.simT + d.cfg.FaultDuration
		}
		s.current = 0
		if s.fault == "" && s.door == wire.DoorClosed && s.soc < 100 {
			s.current = math.Min(1, (100-s.soc)/20)
			if s.current < 0.05 {
				s.current = 0.05
			}
			s.soc = math.Min(100, s.soc+fullRate*s.current*dt)
			if s.soc > 99.95 {
				s.soc = 100
			}
		}
		target := ambientC + 12*s.current
		if s.fault != "overtemp" {
			s.temp += (target - s.temp) * dt / tauTempSec
		}
	}
	if d.cfg.ReturnEvery > 0 && d.rng.Float64() < dt/d.cfg.ReturnEvery.Seconds() {
		var empty []int
		for i := range d.slots {
			s := &d.slots[i]
			if s.battery == "" && s.door == wire.DoorClosed && s.takeAt == 0 && s.available && !s.indicator {
				empty = append(empty, i)
			}
		}
		if len(empty) > 0 {
			s := &d.slots[empty[d.rng.IntN(len(empty))]]
			s.battery = d.newBatteryID()
			s.soc = 8 + d.rng.Float64()*30
			s.soh = 75 + d.rng.Float64()*24
			s.temp = ambientC + 4 + d.rng.Float64()*4
			s.locked = true
		}
	}
}

// ReadSlots advances the simulation and returns every slot.
func (d *Driver) ReadSlots(ctx context.Context) ([]wire.Slot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	out := make([]wire.Slot, len(d.slots))
	for i := range d.slots {
		s := &d.slots[i]
		ws := wire.Slot{
			Slot:     i + 1,
			SoC:      round1(s.soc),
			SoH:      round1(s.soh),
			TempC:    round1(s.temp),
			Charging: s.current > 0,
			Door:     s.door,
			Locked:   s.locked,
			Fault:    s.fault,
		}
		if s.battery != "" {
			id := s.battery
			ws.BatteryID = &id
			ws.VoltageV = round1(44 + 10*s.soc/100 + 0.8*s.current)
		}
		out[i] = ws
	}
	return out, nil
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }

func (d *Driver) slot(n int) (*slot, error) {
	if n < 1 || n > len(d.slots) {
		return nil, fmt.Errorf("%w %d (1..%d)", ErrNoSlot, n, len(d.slots))
	}
	return &d.slots[n-1], nil
}

// Unlock opens the slot's door. The simulated rider takes the battery and
// closes the door TakeAfter later.
func (d *Driver) Unlock(ctx context.Context, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	s, err := d.slot(n)
	if err != nil {
		return err
	}
	s.locked = false
	s.door = wire.DoorOpen
	s.current = 0
	s.takeAt = d.simT + d.cfg.TakeAfter
	return nil
}

// Lock closes and locks the slot's door at once.
func (d *Driver) Lock(ctx context.Context, n int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.advance()
	s, err := d.slot(n)
	if err != nil {
		return err
	}
	s.locked = true
	s.door = wire.DoorClosed
	s.takeAt = 0
	return nil
}

// SetIndicator switches the slot's reservation light.
func (d *Driver) SetIndicator(ctx context.Context, n int, on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.slot(n)
	if err != nil {
		return err
	}
	s.indicator = on
	return nil
}

// Indicator reports the slot's reservation light (for tests).
func (d *Driver) Indicator(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.slot(n)
	return err == nil && s.indicator
}

// Available reports whether a slot is in service (for tests).
func (d *Driver) Available(n int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, err := d.slot(n)
	return err == nil && s.available
}

// SetAvailability marks a slot (n ≥ 1) or the whole station (n == 0) in or
// out of service. A slot out of service receives no returned batteries.
func (d *Driver) SetAvailability(ctx context.Context, n int, available bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n == 0 {
		d.available = available
		for i := range d.slots {
			d.slots[i].available = available
		}
		return nil
	}
	s, err := d.slot(n)
	if err != nil {
		return err
	}
	s.available = available
	return nil
}

// Close does nothing; the simulation owns no resources.
func (d *Driver) Close() error { return nil }
