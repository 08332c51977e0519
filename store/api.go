package store

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"time"
)

// Sentinel errors. Compare with errors.Is.
var (
	// ErrNotFound: no such station, user, record or booking.
	ErrNotFound = errors.New("store: not found")
	// ErrExists: a station or user with that id already exists.
	ErrExists = errors.New("store: already exists")
	// ErrLocked: another process holds the data file.
	ErrLocked = errors.New("store: data file is in use by another process")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrCompacted: events after the requested seq were removed by retention,
	// so the caller cannot recover without a gap.
	ErrCompacted = errors.New("store: events after that seq were compacted")
)

// Options configures Open. The zero value is usable.
type Options struct {
	// OpenTimeout bounds the wait for the file lock; 0 means 1s. A second
	// process on the same file fails with ErrLocked after it.
	OpenTimeout time.Duration
	// Retention bounds the event log; zero fields take the defaults below.
	Retention Retention
	// CompactEvery is how often retention runs; 0 means 1 minute.
	CompactEvery time.Duration
	// MaxBatch bounds how many Update calls share one commit; 0 means
	// DefaultMaxBatch (4096). A commit's events reach the commit listener in
	// one call, so its consumers must take bursts of that size.
	MaxBatch int
	// Logger receives background compaction results; nil discards them.
	Logger *slog.Logger
	// Registerer receives the store's metrics (commit durations and batch
	// sizes); nil: not registered.
	Registerer prometheus.Registerer
	// NoSync skips fsync (benchmarks comparing against it only; never in
	// production).
	NoSync bool
}

// Retention bounds the event log by age and by count; whichever removes more
// wins. Zero MaxAge means 7 days; zero MaxEvents means 1,000,000; zero
// MaxStationEvents means 50,000. Negative values disable that bound.
//
// MaxStationEvents bounds each station's own channel (events with a
// station id and no user id) and applies first: a station over it loses
// its own oldest events, from wherever they are in the log, so one
// station flooding the log evicts its own history, not other stations'
// events or users' notifications. MaxEvents then counts the events left
// and removes the oldest beyond it, and MaxAge removes a prefix too: an
// event goes by age once it and every older event are older than MaxAge
// (event Time, as given to Append).
type Retention struct {
	MaxAge           time.Duration
	MaxEvents        int
	MaxStationEvents int
}

// Station is a provisioned station.
type Station struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	Slots      int       `json:"slots"`
	Lat        float64   `json:"lat"`
	Lon        float64   `json:"lon"`
	SecretHash [32]byte  `json:"secret_hash"` // SHA-256 of the station secret
	CreatedAt  time.Time `json:"created_at"`
}

// User is an app user.
type User struct {
	ID        string    `json:"id"`
	TokenHash [32]byte  `json:"token_hash"` // SHA-256 of the token the user was created with; its live tokens are in the token index (see AddUserToken)
	CreatedAt time.Time `json:"created_at"`
}

// Event is one entry of the event log.
//
// To append, fill Type, Time (zero means now), StationID and/or UserID, and
// Fields (the JSON object of the event's fields without type/seq/ts); Tx.Append
// assigns Seq and builds Data, the complete wire frame
// {"type":…,"seq":…,"ts":…,…fields}.
//
// An event with a UserID belongs to that user's channel only; an event with a
// StationID and no UserID belongs to that station's channel and to the
// all-stations channel.
type Event struct {
	Seq       uint64
	Time      time.Time
	Type      string
	StationID string
	UserID    string
	Fields    []byte // input to Append only; not stored
	Data      []byte // the wire frame
}

// ChannelKind selects which events a log read returns.
type ChannelKind uint8

// Channel kinds.
const (
	AllStations ChannelKind = iota // every station event (no user events)
	OneStation                     // events of Channel.ID's station
	OneUser                        // events of user Channel.ID
	Everything                     // the whole log (admin reads)
)

// Channel names a WebSocket channel, or a filter of the event log.
type Channel struct {
	Kind ChannelKind
	ID   string
}

// Matches reports whether ev belongs to the channel.
func (c Channel) Matches(ev *Event) bool {
	switch c.Kind {
	case AllStations:
		return ev.UserID == "" && ev.StationID != ""
	case OneStation:
		return ev.UserID == "" && ev.StationID == c.ID
	case OneUser:
		return ev.UserID == c.ID
	case Everything:
		return true
	}
	return false
}

// Record kinds: generic keyed records the bridge owns the encoding of. Each
// kind lives in its own bucket; keys are ordered byte-wise so prefix scans
// work (e.g. "sid/…").
type Kind string

// The record kinds the server uses.
const (
	KindStationState Kind = "station_state" // key sid
	KindBooking      Kind = "booking"       // key booking id
	KindUserBooking  Kind = "user_booking"  // key uid + "/" + booking id; index
	KindCommand      Kind = "command"       // key command id
	KindMeta         Kind = "meta"          // small server-wide values
)
