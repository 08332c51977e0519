package mqtttest

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// TCPListener is mochi's TCP listener with a Close that disconnects its
// clients through Clients.GetAll. mochi's own Close path
// (closeListenerClients) calls GetByListener, which takes the clients'
// read lock twice (it calls Len under it); a client disconnecting in
// between waits for the write lock, and the second read lock then waits
// behind it for ever: mochi's Server.Close deadlocks. Every bare mochi
// server in this module (test brokers, the benchmark's baseline) listens
// through this.
type TCPListener struct {
	*listeners.TCP
	srv *mqtt.Server
}

// NewTCPListener returns a TCP listener with id on addr for srv.
func NewTCPListener(srv *mqtt.Server, id, addr string) TCPListener {
	return TCPListener{listeners.NewTCP(listeners.Config{ID: id, Address: addr}), srv}
}

// Close stops listening and disconnects the listener's clients.
func (l TCPListener) Close(listeners.CloseFn) {
	l.TCP.Close(func(string) {})
	for _, cl := range l.srv.Clients.GetAll() {
		if cl.Net.Listener == l.ID() {
			_ = l.srv.DisconnectClient(cl, packets.ErrServerShuttingDown)
		}
	}
}
