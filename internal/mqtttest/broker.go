package mqtttest

import (
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
)

// Broker is a bare mochi server for tests (a stand-in for swapd's broker
// where a test needs only MQTT), listening through TCPListener.
type Broker struct {
	*mqtt.Server
	Addr string // host:port
	once sync.Once
}

// StartBroker starts a bare mochi server on addr ("": 127.0.0.1:0) with
// an inline client and its log discarded. With ledger nil every client and
// topic is allowed; otherwise ledger decides (mochi's auth.Hook). setup,
// when not nil, runs before the server serves (inline subscriptions made
// there miss nothing). The server is closed at t's cleanup.
func StartBroker(t TB, addr string, ledger *auth.Ledger, setup func(*mqtt.Server) error) *Broker {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	var err error
	if ledger == nil {
		err = srv.AddHook(new(auth.AllowHook), nil)
	} else {
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger})
	}
	if err != nil {
		t.Fatalf("mochi auth hook: %v", err)
	}
	if setup != nil {
		if err := setup(srv); err != nil {
			t.Fatalf("mochi setup: %v", err)
		}
	}
	tcp := NewTCPListener(srv, "tcp", addr)
	if err := srv.AddListener(tcp); err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatalf("mochi serve: %v", err)
	}
	b := &Broker{Server: srv, Addr: tcp.Address()}
	t.Cleanup(b.Close)
	return b
}

// Close stops the server and disconnects its clients; it is idempotent.
func (b *Broker) Close() { b.once.Do(func() { b.Server.Close() }) }

// URL is the broker's address as tcp://host:port.
func (b *Broker) URL() string { return "tcp://" + b.Addr }
