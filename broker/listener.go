package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// listener is a mochi listeners.Listener over TCP (optionally TLS) that
// binds eagerly (so Start reports a taken port), gives every new connection
// a deadline for its handshake and CONNECT, tracks its connections and
// waits for their goroutines on Close.
type listener struct {
	id string
	ln net.Listener
	b  *Broker

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup // accept loop and connection goroutines; Add under mu
}

func listen(id, addr string, tlsCfg *tls.Config, b *Broker) (*listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("broker: listen for MQTT (%s) on %s: %w", id, addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	return &listener{id: id, ln: ln, b: b, conns: make(map[net.Conn]struct{})}, nil
}

// ID implements listeners.Listener.
func (l *listener) ID() string { return l.id }

// Address implements listeners.Listener: the bound address.
func (l *listener) Address() string { return l.ln.Addr().String() }

// Protocol implements listeners.Listener.
func (l *listener) Protocol() string { return l.id }

// Init implements listeners.Listener; the socket is already bound.
func (l *listener) Init(*slog.Logger) error { return nil }

// Serve implements listeners.Listener: it accepts until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.wg.Add(1)
	l.mu.Unlock()
	defer l.wg.Done()

	var tempDelay time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: back off, as net/http does.
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				l.b.log.Warn("mqtt accept", "listener", l.id, "error", err, "retry_in", tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			l.b.log.Error("mqtt accept stopped", "listener", l.id, "error", err)
			return
		}
		tempDelay = 0

		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = conn.Close()
			return
		}
		l.conns[conn] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()

		go l.handle(conn, establish)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (l *listener) handle(conn net.Conn, establish listeners.EstablishFn) {
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, conn)
		l.mu.Unlock()
		_ = conn.Close()
	}()
	// mochi replaces this deadline with the keepalive once CONNECT is read.
	_ = conn.SetDeadline(time.Now().Add(l.b.cfg.ConnectTimeout))
	tc := &trackedConn{Conn: conn}
	err := establish(l.id, tc)
	// Oversized packets of established sessions are counted by the hook.
	if errors.Is(err, packets.ErrPacketTooLarge) && !tc.established.Load() {
		l.b.m.oversized.Inc()
		l.b.log.Info("mqtt packet too large", "listener", l.id, "remote", conn.RemoteAddr().String())
	}
	if err != nil {
		l.b.log.Debug("mqtt connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "error", err)
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// closeSocket closes the bound socket of a listener that never served.
func (l *listener) closeSocket() { _ = l.ln.Close() }

// Close implements listeners.Listener: it stops accepting, disconnects
// this listener's clients, closes any connection still in its
// handshake, and waits for every goroutine of the listener.
func (l *listener) Close(listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()

	_ = l.ln.Close()
	// Instead of closeClients (which sends DISCONNECT even to MQTT 3.1.1
	// clients), MQTT 5 clients get DISCONNECT "server shutting down" and
	// 3.1.1 clients a closed connection.
	// Clients.GetByListener takes the clients' read lock twice (through
	// Len); with a disconnecting client's Delete waiting for the write lock
	// in between, it deadlocks. GetAll takes it once.
	for _, cl := range l.b.srv.Clients.GetAll() {
		if cl.Net.Listener == l.id && !cl.Closed() {
			l.b.dropClient(cl, packets.ErrServerShuttingDown)
		}
	}

	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// trackedConn is the connection handed to mochi; the hook marks it once the
// MQTT session is established.
type trackedConn struct {
	net.Conn
	established atomic.Bool
	// acks orders the PUBACKs of pipelined publishes; set when the session
	// is established (on the connection's reader, before any publish is
	// read) if the handler is a PipelineHandler and pipelining is on.
	acks *ackQueue
}
