package bridge

import (
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Bridge. Every zero field takes the default named in its
// comment, so Config{} is usable.
type Config struct {
	// ReadySoC is the state of charge (percent) from which a battery is
	// swappable; 0 means 90.
	ReadySoC float64
	// MinSoH is the health floor (percent) of a swappable or bookable
	// battery; 0 means 70.
	MinSoH float64
	// MaxTempC is the heat limit (°C) of a swappable battery; 0 means 50.
	MaxTempC float64

	// BookingHold is how long a ready booking holds its battery; 0 means
	// 15m. (The lead reads SWAPD_BOOKING_HOLD into it.)
	BookingHold time.Duration
	// MaxActiveBookings is how many active bookings (pending, confirmed or
	// ready) one user may hold at once, over all stations; one more is
	// refused with ErrBookingLimit. 0 means 2; negative means no limit.
	MaxActiveBookings int
	// ChargeWait bounds how long a booking may wait for its battery to become
	// swappable (pending or confirmed, not yet ready) before it expires; 0
	// means 1h.
	ChargeWait time.Duration
	// SnapshotInterval is the stations' full-telemetry period; a station that
	// sends nothing for 3× this long is marked offline. 0 means 60s.
	SnapshotInterval time.Duration
	// OfflineFail is how long a station may stay offline before its active
	// bookings fail; 0 means 10m.
	OfflineFail time.Duration

	// CommandRetry is the first retry delay of an unacknowledged command; it
	// doubles per attempt up to CommandRetryMax. 0 means 2s.
	CommandRetry time.Duration
	// CommandRetryMax caps the retry delay; 0 means 1m.
	CommandRetryMax time.Duration
	// CommandTimeout is how long a command is retried before it is marked
	// failed (a reserve that times out fails its booking); 0 means 2m.
	CommandTimeout time.Duration
	// CommandKeep is how long acknowledged or failed command records are
	// kept before Start purges them; 0 means 24h.
	CommandKeep time.Duration

	// TickInterval is the period of the timer loop (hold expiry, command
	// retries, liveness); 0 means 1s.
	TickInterval time.Duration
	// SendQueue bounds the queue of commands waiting for the sender
	// goroutine; 0 means 4096. A full queue drops the send (counted in
	// swapd_bridge_send_queue_dropped_total); persisted commands are
	// retried by the timer loop.
	SendQueue int

	// StationEventRate is each station's sustained budget of per-battery
	// events (battery_added, battery_removed without a booking) and
	// inventory_update events per second; beyond it per-battery events are
	// coalesced into inventory_update, published at most once a second
	// (see budget.go). 0 means 10; negative turns the budget off.
	StationEventRate float64
	// StationEventBurst is how many such events a station may make at
	// once; 0 means 200.
	StationEventBurst int

	// Registerer receives the bridge's metrics; nil means not registered.
	Registerer prometheus.Registerer
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
	// Clock returns the current time; nil means time.Now. Tests inject a
	// fake clock.
	Clock func() time.Time
}

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.ReadySoC <= 0 {
		c.ReadySoC = 90
	}
	if c.MinSoH <= 0 {
		c.MinSoH = 70
	}
	if c.MaxTempC == 0 {
		c.MaxTempC = 50
	}
	if c.MaxActiveBookings == 0 {
		c.MaxActiveBookings = 2
	}
	def(&c.BookingHold, 15*time.Minute)
	def(&c.ChargeWait, time.Hour)
	def(&c.SnapshotInterval, time.Minute)
	def(&c.OfflineFail, 10*time.Minute)
	def(&c.CommandRetry, 2*time.Second)
	def(&c.CommandRetryMax, time.Minute)
	def(&c.CommandTimeout, 2*time.Minute)
	def(&c.CommandKeep, 24*time.Hour)
	def(&c.TickInterval, time.Second)
	if c.StationEventRate == 0 {
		c.StationEventRate = 10
	}
	if c.StationEventBurst <= 0 {
		c.StationEventBurst = 200
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c
}
