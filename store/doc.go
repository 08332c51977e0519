// Package store is swapd's durable state on bbolt: provisioned stations and
// their credential hashes, users and their token hashes, the runtime records
// the bridge keeps (station state, bookings, commands), and the append-only
// event log with its per-station and per-user indexes.
//
// Writes that must be durable before the caller answers anyone go through
// Update, a group commit: many concurrent callers share one bbolt
// transaction and one fsync, and the next commit starts as soon as the
// previous fsync returns, with whatever queued meanwhile. Update blocks until
// the caller's changes are on disk (or failed). Events appended in a commit are
// handed, after the fsync and in seq order, to the commit listener (see
// SetCommitListener), from the committer goroutine.
//
// The store knows nothing of MQTT or WebSocket.
package store
