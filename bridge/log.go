package bridge

import "github.com/swapbridge/swapbridge/internal/commitlog"

// Log is where the bridge's commits go: one commitlog.Commit per transition
// of a station (its state record, booking and command records, and its
// events), appended atomically. store.Store implements it on bbolt (group
// commit: many commits share one fsync); internal/memlog in memory.
//
// The bridge relies on this, and nothing more:
//
//   - Append returns at once. done is called exactly once (possibly before
//     Append returns, possibly on another goroutine; it must not block): nil
//     once the whole commit is durable, or the error for which none of it
//     is. If Append returns an error, done is never called.
//   - The commits of one station are answered, and become durable, in the
//     order they were appended. The log assigns the events' seqs, in one
//     order over all stations.
//   - Fence: once a commit of a station fails, every later commit of that
//     station fails too, until a commit with Reopen (which the bridge sends
//     first after it reloaded the station). A commit derived from a lost
//     one is never kept.
//   - Record and Records read what is durable.
type Log interface {
	Append(c *commitlog.Commit, done func(error)) error
	// Record returns a committed record, or an error matching
	// commitlog.ErrNotFound.
	Record(kind commitlog.Kind, key string) ([]byte, error)
	// Records calls fn for each committed record of kind whose key starts
	// with prefix, in key order, until fn returns false; value is valid
	// during the call only.
	Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error
}

// Catalog is the list of provisioned stations and users, written by the
// admin API (and by a commit's RemoveStation). Errors for unknown ids match
// commitlog.ErrNotFound.
type Catalog interface {
	StationInfo(sid string) (commitlog.StationInfo, error)
	StationInfos() ([]commitlog.StationInfo, error)
	UserExists(uid string) (bool, error)
}

// Storage is what New takes: the log and the catalogue, usually one value
// (store.Store, memlog.Log).
type Storage interface {
	Log
	Catalog
}
