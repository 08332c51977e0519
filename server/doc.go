// Package server assembles swapd: the store, the embedded MQTT broker, the
// bridge, the WebSocket hub and the HTTP API, from one Config. cmd/swapd
// parses flags into a Config and calls Run; tests and the demo build a
// Server in-process on random ports.
//
// Start blocks until every listener is bound (or fails with a clear error);
// Shutdown blocks until every part has stopped.
package server
