// Package commitlog holds the records a commit log carries: the commit the
// bridge appends for one transition of a station (its state record, booking
// and command records, and its events), and the station catalogue entries
// it reads back. The interface over them is declared by its consumer
// (bridge.Log); store (bbolt) and internal/memlog (in memory) implement it.
//
// The package has no behaviour (one interface, Reader, names the reads
// both sides share); it imports nothing internal.
package commitlog

import (
	"errors"
	"time"
)

// ErrNotFound: no such record, station or user. Implementations return it
// wrapped; compare with errors.Is.
var ErrNotFound = errors.New("commitlog: not found")

// Kind names a family of keyed records. Keys of one kind are ordered
// byte-wise, so prefix scans work (e.g. "uid/…").
type Kind string

// The record kinds the bridge writes.
const (
	KindStationState Kind = "station_state" // key sid
	KindBooking      Kind = "booking"       // key booking id
	KindUserBooking  Kind = "user_booking"  // key uid + "/" + booking id; index, value "1"
	KindCommand      Kind = "command"       // key command id
)

// Record is one keyed record of a commit. A nil Value deletes the key.
type Record struct {
	Kind  Kind
	Key   string
	Value []byte
}

// Event is an event to append. The log assigns its seq (one global order)
// and builds its wire frame from Type, the seq, Time and Fields (a JSON
// object of the event's other fields). An event with a UserID belongs to
// that user's channel; one with only a StationID to the station's channel.
type Event struct {
	Type      string
	Time      time.Time
	StationID string
	UserID    string
	Fields    []byte
}

// Commit is one atomic append: all of it is durable, or none of it.
type Commit struct {
	// Station is the station whose transition this is; empty for a commit
	// that belongs to none (a user's notification, a purge of settled
	// records). A log keeps each station's commits in the order appended,
	// and fences them: once one fails, every later one of the same station
	// fails too, until a commit with Reopen.
	Station string
	// Reopen marks the first commit of a station after the bridge (re)loaded
	// it: it lifts the fence a failure left. (A replicated log makes it the
	// takeover write that later writes of the station are checked against.)
	Reopen bool
	// Records are written in order, before the events.
	Records []Record
	Events  []Event
	// RemoveStation takes Station out of the catalogue with its
	// credentials, after the records; the commit fails with ErrNotFound if
	// the catalogue has no such station.
	RemoveStation bool
}

// Reader reads committed records: a log, or one snapshot of it.
type Reader interface {
	// Record returns a committed record, or an error matching
	// ErrNotFound.
	Record(kind Kind, key string) ([]byte, error)
	// Records calls fn for each committed record of kind whose key starts
	// with prefix, in key order, until fn returns false; value is valid
	// during the call only.
	Records(kind Kind, prefix string, fn func(key string, value []byte) bool) error
}

// StationInfo is a station's catalogue entry, as the bridge needs it.
type StationInfo struct {
	ID    string
	Name  string
	Slots int
	Lat   float64
	Lon   float64
}
