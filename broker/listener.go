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
	conns  map[*trackedConn]struct{}
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
	return &listener{id: id, ln: ln, b: b, conns: make(map[*trackedConn]struct{})}, nil
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
		tc := &trackedConn{Conn: conn, writeTimeout: l.b.cfg.WriteTimeout}
		l.conns[tc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()

		go l.handle(tc, establish)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (l *listener) handle(tc *trackedConn, establish listeners.EstablishFn) {
	conn := tc.Conn
	defer l.wg.Done()
	defer func() {
		l.mu.Lock()
		delete(l.conns, tc)
		l.mu.Unlock()
		_ = conn.Close()
	}()
	// The TLS handshake and the CONNECT must be done by then; mochi
	// replaces the read deadline with the keepalive once CONNECT is read.
	_ = conn.SetDeadline(time.Now().Add(l.b.cfg.ConnectTimeout))
	err := establish(l.id, tc)
	l.b.connEnded(tc)
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
	// No write to a client lasts past closeGrace from now, whether it is
	// under way or still to come: a client that stopped reading cannot
	// hold Close up.
	stop := time.Now().Add(closeGrace)
	l.mu.Lock()
	for c := range l.conns {
		c.stopWritesAt(stop)
	}
	l.mu.Unlock()
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

// trackedConn is the connection handed to mochi. Every write gets a
// deadline of writeTimeout (or the listener's stop time, if sooner), and a
// write that misses it closes the connection: a client that does not read
// is dropped, and holds no lock of mochi's for longer. mochi's
// SetDeadline (the keepalive) sets the read deadline only. The hook marks
// the connection once the MQTT session is established.
type trackedConn struct {
	net.Conn
	writeTimeout time.Duration

	dmu    sync.Mutex
	stopBy time.Time // set by the listener's Close; guarded by dmu

	established atomic.Bool
	// Takeover state, guarded by the station's stripe lock: sid is the
	// station (set once authenticated); replacedBy the newer connection of
	// the station that took this one over; owesDown is set when the end of
	// the connection this one replaced was not reported, for this one to
	// report if it never comes up; ended once its goroutine is done.
	sid        string
	replacedBy *trackedConn
	owesDown   bool
	ended      bool

	// acks orders the PUBACKs of pipelined publishes; set when the session
	// is established (on the connection's reader, before any publish is
	// read) when the broker has a Handler.
	acks *ackQueue
}

// Write implements net.Conn with the write deadline.
func (c *trackedConn) Write(p []byte) (int, error) {
	c.dmu.Lock()
	d := time.Now().Add(c.writeTimeout)
	if !c.stopBy.IsZero() && c.stopBy.Before(d) {
		d = c.stopBy
	}
	_ = c.Conn.SetWriteDeadline(d)
	c.dmu.Unlock()
	n, err := c.Conn.Write(p)
	if err != nil {
		// After a partial write the stream is unusable anyway.
		_ = c.Conn.Close()
	}
	return n, err
}

// SetDeadline implements net.Conn: it sets the read deadline only; writes
// have theirs.
func (c *trackedConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

// stopWritesAt makes every write, under way or to come, end by t.
func (c *trackedConn) stopWritesAt(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.stopBy = t
	_ = c.Conn.SetWriteDeadline(t)
}
