// Package store is swapd's durable state on bbolt: provisioned stations and
// their credential hashes (with a rotated secret's predecessor during its
// grace period), users and their token hashes (several per user; see
// credentials.go), the runtime records
// the bridge keeps (station state, bookings, commands; see Kind), and the
// append-only event log with its per-station and per-user indexes.
//
// # Writes: group commit
//
// Writes that must be durable before the caller answers anyone go through
// Update. Many concurrent callers share one bbolt transaction and one fsync:
// a committer goroutine takes everything queued (up to Options.MaxBatch),
// runs each caller's fn in turn in one read-write transaction, commits, and
// starts the next commit as soon as that returns, with whatever queued
// meanwhile; there is no batching delay. If one fn fails, the transaction is
// rolled back, that caller gets its error, and the batch is rerun without it,
// so a fn may run more than once. Events appended in a commit are handed,
// after the fsync and in seq order, to the commit listener (see
// SetCommitListener), from the committer goroutine, before the callers'
// Updates return. UpdateAsync queues the same way without waiting.
//
// The bridge's commit log (commitlog.go) is built on it: Append queues one
// commitlog.Commit (a station's state record, booking and command records
// and events) with UpdateAsync, so requests are committed in the order
// appended, and fences each station: once a commit of a station fails,
// its later ones fail in their transaction until one with Reopen. Commit
// durations and batch sizes are the swapd_store_commit_duration_seconds
// and swapd_store_commit_batch_size histograms (Options.Registerer).
//
// # The event log
//
// One global sequence numbers every event (uint64, never reused: the last
// seq is persisted, so neither compaction nor a reopen can hand it out
// again). Each event is stored once, as a small header (time, type, station,
// user) followed by its complete wire frame, so reads return Event.Data
// without encoding. Two indexes, station id + seq and user id + seq, let
// EventsAfter read one station's or one user's events after a seq by seeking
// the index, never looking at other channels. The station index is ordered
// by epoch (4096 seqs) before station id, so that a commit of telemetry from
// thousands of stations writes a few index pages, not one per station; a
// read seeks once per epoch it spans. (Files of earlier versions, whose
// station index was station-first, are migrated at Open, in one
// transaction: under a second for a million events.) The all-stations channel has
// no index of its own: it walks the log from the requested seq and skips
// user events (these are a small share of the log, and the walk is
// sequential).
//
// Retention (Options.Retention) runs every Options.CompactEvery and on
// Compact, in transactions of bounded size. First a station whose own
// channel holds more than MaxStationEvents loses its own oldest events,
// from the middle of the log (through the station index), and its cut (the
// highest seq removed) is stored; then the count and age bounds remove a
// prefix of the log. FirstSeq is the oldest retained seq; FirstSeqOf(ch)
// is where ch's events are complete (after the cut, for the cut station,
// the all-stations channel and the whole log). EventsAfter returns
// ErrCompacted when the caller's since falls before it. How many events the
// log and each station channel hold is kept in memory: committed events
// are counted by the committer, and the events already in the file at Open
// by one walk over the log in the first Compact (about 0.3 s for a million
// events).
//
// # Blocking
//
// Open blocks up to Options.OpenTimeout for the file lock. Update blocks
// until the caller's changes are on disk (or failed); UpdateAsync and
// Append never block. Close waits for the
// running commit and compaction step. View, EventsAfter, Events, Station,
// Stations, StationSecretHash, StationSecretHashes, User, UserTokenIDs,
// UserByTokenHash, Record, Records, StationInfo(s) and UserExists read the last
// committed state without waiting for writers; LastSeq and FirstSeq are
// atomic loads. An Update fn, View fn or commit listener must not call
// Update (the committer would wait for itself).
//
// The store knows nothing of MQTT or WebSocket.
package store
