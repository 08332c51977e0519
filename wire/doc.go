// Package wire holds the JSON types of the external contract (docs/ and
// CONTRACT.md): MQTT topics and payloads exchanged with stations, the
// WebSocket event and control messages seen by app clients, and the HTTP
// error shape. It is shared by the agent, the bridge and the realtime layer
// and imports nothing from this module.
//
// Nothing here blocks or keeps state.
package wire
