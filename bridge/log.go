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
//   - Record and Records read what is durable (a replicated log: at least
//     what this node's commits made durable).
//   - Load reads one consistent snapshot, and the stations it loaded are
//     fenced at that snapshot: a log with several writers (cluster/jslog)
//     refuses a station's next Reopen commit if another writer committed
//     for the station after the snapshot, so a station loaded from stale
//     records can never overwrite newer ones.
type Log interface {
	Append(c *commitlog.Commit, done func(error)) error
	Reader
	// Load calls fn with a reader of one consistent snapshot of the
	// committed records, from which the bridge (re)loads the stations
	// sids; their next commits carry Reopen. fn must not append.
	Load(sids []string, fn func(Reader) error) error
}

// Reader reads committed records (commitlog.Reader).
type Reader = commitlog.Reader

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
