// Package realtime owns the app-facing WebSocket endpoints of swapd:
// /ws/stations/, /ws/stations/{sid}/ and /ws/notifications/ (see
// docs/WEBSOCKET_API.md and the contract).
//
// A Hub keeps channel → subscribers. Publish, the store's commit listener,
// fans each committed event out by queueing its already-encoded frame
// (store.Event.Data, shared by every connection, never re-encoded) on each
// subscriber. Each connection has a reader goroutine for its whole life and
// a writer goroutine only while it has something to send; the writer takes
// everything queued, frames it into one pooled buffer and writes it with one
// write under one deadline. A connection whose queue exceeds its bounds
// (messages or bytes) is closed with 1013; it never stalls Publish or other
// connections. Protocol pings come from a per-connection timer, not a
// goroutine.
//
// A connection subscribes before it reads the event log, so the hand-over
// from replay (?since=) to live events has no gap and no duplicate: events
// published during the replay wait in its queue and are sent afterwards from
// the first seq not yet sent.
//
// Blocking: Publish never blocks on the network (it takes the hub's read
// lock and each subscriber's mutex briefly). ServeHTTP blocks for the
// handshake (hello plus replay or snapshot) and returns; the connection then
// lives on its own goroutines. Shutdown blocks until every connection's
// goroutines ended, or its context ends. NewHub and Register do not block.
package realtime
