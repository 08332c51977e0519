// Package realtime owns the app-facing WebSocket endpoints of swapd:
// /ws/stations/, /ws/stations/{sid}/ and /ws/notifications/ (see
// docs/WEBSOCKET_API.md and the contract).
//
// A Hub keeps channel → subscribers in shards (by a hash of the channel),
// each with its own lock and goroutine. Publish, the store's commit
// listener, only appends each committed event to the queue of the shards of
// its channels and returns, so the committer goes back to committing; the
// shard's goroutine frames the event once (store.Event.Data, never
// re-encoded, plus its WebSocket header) and queues that one frame on every
// subscriber, in seq order per channel. A shard that falls more than
// Config.FanoutQueue events behind drops them and closes its connections
// with 1013, to resume from the log; the committer never waits. Each
// connection has a reader goroutine for its whole life and
// a writer goroutine only while it has something to send; the writer takes
// everything queued, copies it into one pooled buffer and writes it with one
// write under one deadline. A connection whose queue exceeds its bounds
// (messages or bytes) is closed with 1013; it never stalls its shard or
// other connections. Protocol pings come from a per-connection timer, not a
// goroutine.
//
// A connection subscribes before it reads the event log, so the hand-over
// from replay (?since=) to live events has no gap and no duplicate: events
// its shard delivers during the replay wait in its queue and are sent
// afterwards from the first seq not yet sent, and a connection skips any
// event at or below the newest seq it already has (the replay may read an
// event from the log before its shard delivers it).
//
// Blocking: Publish never blocks on the network nor waits for the shards
// (it takes each involved shard's queue lock for one append). ServeHTTP
// blocks for the handshake (hello plus replay or snapshot) and returns; the connection then
// lives on its own goroutines. Shutdown blocks until every connection's
// goroutines and the shards' ended, or its context ends. NewHub (which
// starts the shards) and Register do not block.
package realtime
