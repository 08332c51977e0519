// Package bench is swapbench's load generator: simulated stations over
// real MQTT, app clients over WebSocket, bookings over HTTP, and the
// measurements published in docs/BENCHMARKS.md.
//
// It owns:
//   - a minimal MQTT 3.1.1 client (one reader goroutine, a 1 KiB read
//     buffer per connection) so that 10,000 stations fit on one machine
//     next to the server;
//   - the simulated station: provisioned through the admin API, it sends a
//     retained status and a full telemetry on connect, then measured
//     telemetry steps that each change available_batteries by one, and
//     acknowledges every command at once (a snapshot command is answered
//     with a full telemetry);
//   - WebSocket clients that match every inventory_update to the step that
//     caused it and record publish→frame latency from the telemetry's own
//     ts; delivered/expected is counted per socket;
//   - an HDR-style histogram (Histogram), /proc readings of the server
//     (ReadProc), the baseline (a bare embedded mochi broker with an inline
//     subscriber) and the report (table and JSON).
//
// Scenarios: steady, storm, rush, ramp and smoke (see Config). Run and
// RunCompare block until the run is over or their context ends, and stop
// everything they started (connections, goroutines, an embedded server)
// before returning.
package bench
