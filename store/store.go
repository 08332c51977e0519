package store

import (
	"context"
	"iter"
)

// Store is the durable state of swapd. It is safe for concurrent use.
type Store struct {
	// TODO(store): bbolt handle, committer goroutine, listener, seq counter.
}

// Open opens (creating if needed) the bbolt file at path. If another process
// holds it, Open fails within Options.OpenTimeout with an error wrapping
// ErrLocked that names the path.
func Open(path string, opts Options) (*Store, error) { panic("unimplemented") }

// Close stops the committer and retention goroutines, fails pending Updates
// with ErrClosed, and closes the file. It is idempotent.
func (s *Store) Close() error { panic("unimplemented") }

// SetCommitListener sets fn to be called after every durable commit that
// appended events, with those events in seq order, from the committer
// goroutine (so calls are serialized and seqs across calls increase). fn must
// not block and must not call Update. Call before the first Update.
func (s *Store) SetCommitListener(fn func(events []Event)) { panic("unimplemented") }

// Update runs fn in a group-committed read-write transaction and returns once
// the transaction is durably on disk, with the events fn appended (Seq and
// Data filled in). If fn returns an error nothing it did is kept and that
// error is returned. fn may run more than once (when another caller's fn in
// the same batch fails, the batch is retried without it), so it must not
// have side effects outside tx until Update returns.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) ([]Event, error) {
	panic("unimplemented")
}

// View runs fn in a read-only transaction.
func (s *Store) View(fn func(tx *Tx) error) error { panic("unimplemented") }

// Tx is a transaction handed to Update or View fns. It must not be used after
// fn returns.
type Tx struct {
	// TODO(store)
}

// Append adds ev to the event log, assigning ev.Seq and building ev.Data.
// Read-write transactions only.
func (tx *Tx) Append(ev *Event) error { panic("unimplemented") }

// Get returns the value stored under key in kind's bucket, or ErrNotFound.
// The slice is valid only during the transaction.
func (tx *Tx) Get(kind Kind, key string) ([]byte, error) { panic("unimplemented") }

// Put stores value under key. The store copies value.
func (tx *Tx) Put(kind Kind, key string, value []byte) error { panic("unimplemented") }

// Delete removes key; missing keys are not an error.
func (tx *Tx) Delete(kind Kind, key string) error { panic("unimplemented") }

// Scan calls fn for every key with the prefix, in key order, until fn returns
// false. Values are valid only during the call.
func (tx *Tx) Scan(kind Kind, prefix string, fn func(key string, value []byte) bool) error {
	panic("unimplemented")
}

// Station returns the provisioned station or ErrNotFound.
func (tx *Tx) Station(id string) (Station, error) { panic("unimplemented") }

// CreateStation provisions st; ErrExists if the id is taken.
func (s *Store) CreateStation(ctx context.Context, st Station) error { panic("unimplemented") }

// Station returns the provisioned station or ErrNotFound.
func (s *Store) Station(id string) (Station, error) { panic("unimplemented") }

// Stations returns every provisioned station, ordered by id.
func (s *Store) Stations() ([]Station, error) { panic("unimplemented") }

// StationSecretHash returns the SHA-256 of the station's secret, or
// ErrNotFound. It is what the broker's auth cache loads from.
func (s *Store) StationSecretHash(id string) ([32]byte, error) { panic("unimplemented") }

// CreateUser adds u; ErrExists if the id is taken.
func (s *Store) CreateUser(ctx context.Context, u User) error { panic("unimplemented") }

// User returns the user or ErrNotFound.
func (s *Store) User(id string) (User, error) { panic("unimplemented") }

// UserByTokenHash returns the user whose token hashes to h, or ErrNotFound.
func (s *Store) UserByTokenHash(h [32]byte) (User, error) { panic("unimplemented") }

// LastSeq returns the seq of the newest event (0 for an empty log).
func (s *Store) LastSeq() uint64 { panic("unimplemented") }

// FirstSeq returns the seq of the oldest retained event (0 for an empty
// log). Events with seq below it were compacted.
func (s *Store) FirstSeq() uint64 { panic("unimplemented") }

// EventsAfter returns up to limit events of ch with seq > since, in seq order
// (limit ≤ 0 means no limit). If retention removed events after since (since
// < FirstSeq()-1), it returns ErrCompacted. Per-station and per-user reads
// use their indexes and do not scan other channels' events.
func (s *Store) EventsAfter(ch Channel, since uint64, limit int) ([]Event, error) {
	panic("unimplemented")
}

// Events iterates over ch's events with seq > since in order, for long reads
// (replay, export) without holding them all in memory.
func (s *Store) Events(ch Channel, since uint64) iter.Seq2[Event, error] {
	panic("unimplemented")
}

// Compact applies the retention policy now and reports how many events it
// removed. It also runs by itself every Options.CompactEvery.
func (s *Store) Compact(ctx context.Context) (int, error) { panic("unimplemented") }
