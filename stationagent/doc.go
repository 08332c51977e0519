// Package stationagent is the program that runs on a station controller:
// it reads the cabinet through a Driver (the sim and modbus drivers live in
// driver/), keeps an MQTT session with the server per the contract
// (swap/v1/stations/{sid}/status|telemetry|cmd|ack), and serves a local
// control socket for the technicians' subcommands.
//
// What it owns:
//
//   - Its data directory: one bbolt file (StateFile, every write fsync'd)
//     holding the telemetry/ack outbox, the boot counter, held reservations,
//     the results of executed command ids (newest 10 000, at most 7 days)
//     and a journal of technician actions; and the control socket
//     (control.sock, mode 0600, HTTP/JSON: GET /v1/status, GET /v1/slots,
//     POST /v1/unlock).
//   - The MQTT session: a fresh paho client per connection (client id =
//     username = station id, CleanSession=false, QoS 1, retained status with
//     a retained Will carrying the same boot_id), with one server of
//     Config.Servers at a time: after a failed connect it tries the next
//     at once, after a lost link or a whole round of failures it waits a
//     jittered exponential backoff (Config.ReconnectMin..ReconnectMax);
//     while every server refuses the credentials it logs once what to check
//     and retries every ReconnectMax (jittered). A switch of server is a
//     reconnect like any other.
//   - Telemetry: every message gets (boot_id, seq) and is written to the
//     outbox before it is published; records are published in order and
//     deleted only when their PUBACK arrives; after a reconnect everything
//     not yet acknowledged is published again with the same bytes, so a
//     repeated (boot_id, seq) always carries the same content. Past
//     Config.OutboxLimit the queued telemetry is replaced by one full
//     snapshot with the next seq. A full report follows every connect and
//     every Config.SnapshotInterval; deltas carry the slots that changed.
//   - Commands: an id is recorded before the driver acts and its result
//     stored with the ack in one transaction, so a redelivered id (also
//     after a restart) is answered with the first result and never executed
//     again.
//
// Blocking: New does no I/O. Run blocks until its context is done (then it
// publishes an offline status, disconnects and returns nil) or returns at
// once with an error when it cannot start (for example ErrDataDirLocked).
// Status and Slots do not block. TechnicianUnlock and the ControlClient
// calls block until the agent's main loop answered or their context ends.
// Doctor blocks on the network for a few seconds per check. There are no
// globals: several agents run in one process, each with its own data dir.
package stationagent
