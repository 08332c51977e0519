// Package api is swapd's HTTP API: the app endpoints (stations, bookings,
// the event log), the admin endpoints (provisioning stations and users,
// notifications, operator status, and the credential lifecycle: secret
// rotation with a grace period, user tokens, revocation and deletion; see
// credentials.go) and the health and metrics endpoints. The WebSocket
// endpoints are served on the same mux by package realtime.
//
// A revocation takes effect before its answer: the store write is durable,
// the broker has closed a station session whose secret is no longer valid
// (CredentialCache.Revoke) and the hub has begun closing the user's WebSockets
// (UserSessions).
//
// Handlers block only on the store (reads, and group-committed writes) and on
// the bridge, which serializes per station. Handlers return their error
// (handlerFunc) and one adapter answers it (adapt, with fail mapping the
// API's own errors and the bridge's and store's sentinels) in the contract's
// shape {"error":{"code":"…","message":"…"}}; Go error strings and stack
// traces never reach a client.
package api
