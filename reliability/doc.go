// Package reliability holds swapbridge's reliability and security tests and
// the one reusable piece they need: Proxy, a fault-injecting TCP proxy that
// sits between a station agent and the broker and drops, delays, cuts or
// swallows the traffic on demand.
//
// The tests (in the _test files) run real processes and real parts:
//
//   - crash tests: swapd built in TestMain, SIGKILLed under QoS 1 telemetry
//     load and in the middle of bookings, restarted on the same data dir;
//     the event log is checked against every acknowledged message and the
//     bbolt file against bbolt's consistency check; the agent is SIGKILLed
//     with a full outbox (the test binary re-executes itself as the agent);
//   - network faults between a real agent and the real broker and bridge;
//   - the bad-input table across MQTT, HTTP and WebSocket, with the event
//     log and station views checked unchanged after each;
//   - abuse limits, secrets in logs, the TLS listener through swapd's
//     config, and interop with Mosquitto's command-line clients.
//
// docs/RELIABILITY.md lists what swapbridge promises and which test proves
// each promise.
//
// # Blocking
//
// NewProxy returns once it listens; connections are served by the proxy's
// own goroutines. The Set… and CutNext calls only flip flags and never
// block. Drop closes connections and returns. Close stops the listener,
// closes every connection and waits for every goroutine of the proxy; it is
// idempotent.
package reliability
