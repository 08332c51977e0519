// Package bridge is swapd's domain: it turns station messages (status,
// telemetry, acks) into slot state, inventory counts and the contract's
// events; it runs bookings through their lifecycle and sends stations their
// commands.
//
// # What it owns
//
// Per station, a stationState record (commitlog.KindStationState): online,
// maintenance, current and superseded boot ids, last telemetry seq,
// last_seen, every slot's reported state and the reservation overlay of the
// active booking on it, in a compact binary record written on every
// telemetry (see statecodec.go; JSON records of earlier versions still
// load). Bookings (booking.go; commitlog.KindBooking, indexed by
// commitlog.KindUserBooking "uid/id") store wire.Booking as JSON. Commands
// (command.go; commitlog.KindCommand) store the wire.Command and its state:
// queued, sent, acked, failed.
//
// The bridge reads and writes them through Log and Catalog (log.go),
// interfaces it declares: store.Store implements them on bbolt,
// internal/memlog in memory. It imports no store.
//
// # Durability
//
// A station has one write path (engine.go). Every transition — a telemetry,
// status or ack, Book, Cancel, Collect, a timer, the sender recording a
// delivery, DeleteStation — is decided and applied to the station's memory
// under its mutex and queued as one commit (state record, booking and
// command records, events) on the Log; its after-durable effects run from
// the commit's completion: the broker's PUBACK (HandlePublish's done), new
// commands handed to the sender, the user's booking place settled, the HTTP
// answer (Book and the others wait for it). The broker keeps reading a
// station while its earlier messages are being committed; the Log makes a
// station's commits durable in the order they were queued, so its records
// and events reach the disk in the order its state advanced. Readers of the
// memory (views, bookings) may see a change some milliseconds before it is
// durable; anything derived from it is queued behind it. A message with no
// effect (a duplicate) is done once the station's queued commits are
// durable. If a commit fails, the Log refuses the station's later queued
// commits (they derive from the lost one), their dones report errors (no
// PUBACK; the broker closes the connection and the station resends), and
// the next operation on the station waits for its queued commits and
// reloads its state, bookings and pending commands from the Log. Nothing
// is acknowledged that is not durable. Events reach WebSocket clients
// through the store's commit listener, never from here.
//
// # Rules
//
//   - Boot ids: messages of the current boot are applied; messages of a boot
//     superseded by a newer one are ignored (the last 8 are remembered); an
//     unseen boot id takes over only with a status online or a full
//     telemetry (an agent's first telemetry after connecting is full). A
//     partial telemetry of an unseen boot is ignored and a snapshot is
//     requested. A Will (status online=false) counts only for the current
//     boot.
//   - Seq: a telemetry whose seq is not above the last one of its boot is a
//     duplicate (or reordered) and is acknowledged without effect. A gap in
//     a partial telemetry applies it and sends the station a snapshot
//     command (at most one per CommandRetry), after the commit, through the
//     sender goroutine.
//   - Liveness: telemetry or status online marks the station online; its
//     Will or 3×SnapshotInterval without a message marks it offline.
//     last_seen is stored, so the timeout holds across a restart.
//   - The first report of a slot sets its state without battery_added; later
//     a new battery id emits battery_added. A battery that leaves its slot
//     emits battery_collected when its booking had been unlocked (the booking
//     turns collected); otherwise battery_removed (wire.TypeBatteryRemoved,
//     an operator alert, with a reason) and a booking on it fails.
//   - Strings a station reports (battery_id, fault, boot_id, an ack's
//     error) must not contain control characters (wire.HasControl): they
//     reach terminals and users' notifications. Such a message is a bad
//     payload (wire.ErrBadPayload) and changes nothing.
//   - Event budget (budget.go): each station's per-battery events
//     (battery_added, battery_removed without a booking) and
//     inventory_update draw from a token bucket (Config.StationEventRate,
//     StationEventBurst); beyond it per-battery events are dropped and
//     counted, coalesced into inventory_update, which is then published at
//     most once a second. Booking events and station_status always go out.
//   - Inventory counts (see thresholds.inventory): faulted slots, booked
//     batteries (active reservation), empty slots, unavailable batteries
//     (every other battery of a station offline or in maintenance),
//     available (swappable) batteries, and charging_batteries for every
//     other battery. The station
//     status is maintenance, offline, faulted (every slot faulted) or online.
//
// # Bookings
//
// A user holds at most Config.MaxActiveBookings active (pending, confirmed
// or ready) bookings over all stations (limits.go): Book reserves a place
// in the user's set before its commit, under one mutex shared by every
// station, and a commit that ends a booking gives the place back; Start
// rebuilds the sets from the stations' reservations.
//
// Book picks the battery and stores the booking (pending), the reservation,
// a reserve command and battery_booked in one commit: battery_booked is
// published when the booking is created, since that is when the battery
// leaves the available count. The station's ack confirms (booking_confirmed);
// booking_ready follows when the battery is swappable and starts the hold
// (Config.BookingHold). Collect is allowed only on ready bookings and sends
// unlock; a door that closes with the battery still inside leaves the
// booking ready and collectable. Cancel and expiry send release. A fault or
// removal on the reserved slot, a refused or never-acknowledged reserve, or
// OfflineFail of station downtime fail the booking; the user gets a
// notification for every failure and expiry. A booking that does not become
// ready within ChargeWait expires.
//
// Commands are retried with exponential backoff (CommandRetry up to
// CommandRetryMax) until acknowledged or CommandTimeout passes; a station
// that reconnects gets its pending commands at the next tick. Pending
// commands and all deadlines survive a restart: Start reloads them.
//
// # Blocking
//
// HandlePublish never waits for a commit (it may wait for the station's
// mutex, and once for a reload after a failed commit); its done runs on the
// Log's goroutine. Book, Cancel, Collect, Notify, SetOperatorStatus,
// StationProvisioned and DeleteStation block for one commit (an fsync,
// shared with concurrent callers). The timer loop queues every station's
// commit, then waits for them together. StationConnected and
// StationDisconnected never block. Views, snapshots and booking reads take
// a station's mutex briefly and read the Log. Commands are sent from the
// bridge's own sender goroutine, so a slow broker never stalls the publish
// path. Close stops the sender and timer goroutines and waits for them; it
// does not close the Log.
package bridge
