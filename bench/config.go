package bench

import (
	"fmt"
	"io"
	"time"
)

// Scenario names.
const (
	Steady = "steady" // fixed telemetry rate
	Storm  = "storm"  // every station reconnects within a window
	Rush   = "rush"   // bookings per second at stations with few batteries
	Ramp   = "ramp"   // raise the rate until p99 or delivery breaks
	// Fanout is a ramp for the WebSocket fan-out: every socket listens to
	// /ws/stations/, so each event is one frame per socket; it reports
	// frames delivered per second and the server's CPU per million frames.
	Fanout = "fanout"
	Smoke  = "smoke" // seconds-long steady + rush + storm for CI
)

// Config is one swapbench run. Zero fields take the defaults of the
// scenario (see Defaults).
type Config struct {
	Scenario string

	// Target: a running swapd (Server, MQTT, AdminToken, optionally
	// ServerPID), or Embedded: a swapd started in this process on loopback
	// ports (DataDir, or a temporary dir). Baseline runs against a bare
	// embedded mochi broker instead; Compare runs the baseline first, then
	// the target.
	Server     string // http://host:port
	MQTT       string // host:port
	AdminToken string
	ServerPID  int
	Embedded   bool
	DataDir    string
	Baseline   bool
	Compare    bool

	Stations int     // simulated stations
	Slots    int     // slots per station
	Rate     float64 // telemetry messages per second, all stations together
	Duration time.Duration
	// WS is the number of station WebSocket clients; WSAll of them listen
	// to /ws/stations/ (every event), the others to one station each.
	WS    int
	WSAll int
	// Window bounds each station's unacknowledged publishes.
	Window int
	// Connect is how many stations connect (or are provisioned) at once
	// during setup.
	Connect int

	// Rush: Users each with a notification socket book at BookingRate per
	// second in total, each booking cancelled once ready.
	Users       int
	BookingRate float64

	// Storm: every station reconnects within StormWindow while HTTPRate
	// GET requests per second probe the API.
	StormWindow time.Duration
	HTTPRate    float64

	// Ramp: from Rate, add RampStep every StepDuration up to MaxRate; a step
	// is good when delivered = expected, the acknowledged rate is within 5%
	// of the offered one and p99 ≤ MaxP99.
	RampStep     float64
	StepDuration time.Duration
	MaxRate      float64
	MaxP99       time.Duration

	// HeapProfile, when set, names a file that receives a heap profile of
	// this process once every station and socket is connected (with the
	// embedded swapd: the server's memory per connection, and the bench's).
	HeapProfile string

	// noPublishLimit turns off the embedded swapd's per-station publish
	// rate limit and event budget (benchmarks push one station as fast as
	// it goes and wait for each step's inventory_update).
	noPublishLimit bool

	// Progress receives a one-line status every second ("\r"-updated);
	// nil: none.
	Progress io.Writer
}

// Defaults returns the defaults of a scenario.
func Defaults(scenario string) Config {
	c := Config{
		Scenario: scenario, Stations: 1000, Slots: 12, Rate: 2000, Duration: 20 * time.Second,
		WS: 100, WSAll: 1, Window: 32, Connect: 64,
		Users: 256, BookingRate: 1000,
		StormWindow: 60 * time.Second, HTTPRate: 100,
		RampStep: 5000, StepDuration: 10 * time.Second, MaxRate: 200000, MaxP99: 50 * time.Millisecond,
	}
	switch scenario {
	case Storm:
		c.Stations, c.WS = 10000, 100
	case Rush:
		c.Stations, c.Slots, c.WS, c.Duration = 100, 4, 10, 20*time.Second
	case Ramp:
		c.Stations, c.Rate, c.WS = 10000, 5000, 10
	case Fanout:
		c.Stations, c.Rate, c.RampStep, c.WS, c.WSAll, c.MaxP99 = 1000, 500, 500, 200, 200, 100*time.Millisecond
	case Smoke:
		c.Stations, c.Rate, c.WS, c.Duration = 20, 50, 10, 3*time.Second
		c.Users, c.BookingRate, c.StormWindow, c.HTTPRate = 5, 5, time.Second, 20
	}
	return c
}

func (c *Config) validate() error {
	switch c.Scenario {
	case Steady, Storm, Rush, Ramp, Fanout, Smoke:
	default:
		return fmt.Errorf("bench: unknown scenario %q (steady, storm, rush, ramp, fanout or smoke)", c.Scenario)
	}
	d := Defaults(c.Scenario)
	fill := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&c.Stations, d.Stations)
	fill(&c.Slots, d.Slots)
	fill(&c.Window, d.Window)
	fill(&c.Connect, d.Connect)
	fill(&c.Users, d.Users)
	if c.Rate <= 0 {
		c.Rate = d.Rate
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.BookingRate <= 0 {
		c.BookingRate = d.BookingRate
	}
	if c.StormWindow <= 0 {
		c.StormWindow = d.StormWindow
	}
	if c.HTTPRate <= 0 {
		c.HTTPRate = d.HTTPRate
	}
	if c.RampStep <= 0 {
		c.RampStep = d.RampStep
	}
	if c.StepDuration <= 0 {
		c.StepDuration = d.StepDuration
	}
	if c.MaxRate <= 0 {
		c.MaxRate = d.MaxRate
	}
	if c.MaxP99 <= 0 {
		c.MaxP99 = d.MaxP99
	}
	if c.WS < 0 || c.WSAll < 0 || c.WSAll > c.WS {
		return fmt.Errorf("bench: --ws-all (%d) must be between 0 and --ws (%d)", c.WSAll, c.WS)
	}
	if c.Slots < 2 || c.Slots > 256 {
		return fmt.Errorf("bench: --slots must be from 2 to 256")
	}
	if c.Window > 200 {
		return fmt.Errorf("bench: --window must be at most 200")
	}
	return nil
}
