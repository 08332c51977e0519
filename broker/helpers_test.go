package broker

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

const waitFor = testwait.Timeout

var errNotFound = errors.New("test: not found")

// creds is an in-memory Credentials: station id → secret.
type creds struct {
	mu    sync.Mutex
	m     map[string][32]byte
	calls atomic.Int64
}

func newCreds(pairs ...string) *creds {
	c := &creds{m: map[string][32]byte{}}
	for i := 0; i+1 < len(pairs); i += 2 {
		c.set(pairs[i], pairs[i+1])
	}
	return c
}

func (c *creds) set(sid, secret string) {
	c.mu.Lock()
	c.m[sid] = sha256.Sum256([]byte(secret))
	c.mu.Unlock()
}

func (c *creds) StationSecretHash(sid string) ([32]byte, error) {
	c.calls.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[sid]
	if !ok {
		return h, fmt.Errorf("station %s: %w", sid, errNotFound)
	}
	return h, nil
}

// event is one Handler call.
type event struct {
	what    string // "publish", "up", "down"
	sid     string
	kind    wire.TopicKind
	payload string
}

// recorder is a Handler that records every call in order; fail, when set,
// decides HandlePublish's result.
type recorder struct {
	events chan event
	fail   func(n int, sid string, kind wire.TopicKind, payload []byte) error
	n      atomic.Int64
}

func newRecorder() *recorder { return &recorder{events: make(chan event, 4096)} }

func (r *recorder) HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	n := int(r.n.Add(1))
	r.events <- event{"publish", sid, kind, string(payload)}
	if r.fail != nil {
		if err := r.fail(n, sid, kind, payload); err != nil {
			return err
		}
	}
	done(nil)
	return nil
}
func (r *recorder) StationConnected(sid string)    { r.events <- event{what: "up", sid: sid} }
func (r *recorder) StationDisconnected(sid string) { r.events <- event{what: "down", sid: sid} }

// next returns the next handler event or fails the test after waitFor.
func (r *recorder) next(t *testing.T) event {
	t.Helper()
	return testwait.Recv(t, r.events, waitFor, "a handler call")
}

// expect reads the next event and checks it.
func (r *recorder) expect(t *testing.T, what, sid string, kind wire.TopicKind, payload string) {
	t.Helper()
	e := r.next(t)
	want := event{what, sid, kind, payload}
	if e != want {
		t.Fatalf("handler event = %+v, want %+v", e, want)
	}
}

// startBroker starts a broker on 127.0.0.1:0 with cfg's other fields.
func startBroker(t *testing.T, cfg Config, c Credentials, h Handler) *Broker {
	t.Helper()
	if cfg.Addr == "" && cfg.TLSAddr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.NotFound == nil {
		cfg.NotFound = errNotFound
	}
	b, err := New(cfg, c)
	if err != nil {
		t.Fatal(err)
	}
	if h != nil {
		b.SetHandler(h)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { _ = b.Close(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * waitFor):
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			t.Error("broker Close hung")
		}
	})
	return b
}

// client options for a station connecting to addr.
func stationOpts(addr, id, user, pass string) *paho.ClientOptions {
	return paho.NewClientOptions().
		AddBroker("tcp://" + addr).
		SetClientID(id).
		SetUsername(user).
		SetPassword(pass).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitFor).
		SetWriteTimeout(waitFor).
		SetKeepAlive(30 * time.Second)
}

// dial connects a paho client; the client is disconnected at cleanup.
func dial(t *testing.T, opts *paho.ClientOptions) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { c.Disconnect(0); close(done) }()
		select {
		case <-done:
		case <-time.After(waitFor):
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			t.Errorf("paho disconnect of %s hung", opts.ClientID)
		}
	})
	return c, nil
}

func mustDial(t *testing.T, opts *paho.ClientOptions) paho.Client {
	t.Helper()
	c, err := dial(t, opts)
	if err != nil {
		t.Fatalf("connect %s: %v", opts.ClientID, err)
	}
	return c
}

// wait waits for a paho token and returns its error.
func wait(t *testing.T, tok paho.Token) error {
	t.Helper()
	if !tok.WaitTimeout(waitFor) {
		t.Fatal("paho token timed out")
	}
	return tok.Error()
}

// value reads a counter or gauge.
func value(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

// recvChan returns a paho message handler feeding a channel.
func recvChan() (chan paho.Message, paho.MessageHandler) {
	ch := make(chan paho.Message, 64)
	return ch, func(_ paho.Client, m paho.Message) {
		select {
		case ch <- m:
		default: // never block paho's router
		}
	}
}

func recvMsg(t *testing.T, ch chan paho.Message) paho.Message {
	t.Helper()
	return testwait.Recv(t, ch, waitFor, "an MQTT message")
}

// connCapture makes paho dial through a function that keeps the last
// connection, so a test can kill it.
type connCapture struct {
	mu   sync.Mutex
	conn net.Conn
}

func (cc *connCapture) open(uri *url.URL, _ paho.ClientOptions) (net.Conn, error) {
	c, err := net.Dial("tcp", uri.Host)
	if err != nil {
		return nil, err
	}
	cc.mu.Lock()
	cc.conn = c
	cc.mu.Unlock()
	return c, nil
}

func (cc *connCapture) kill() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	_ = cc.conn.Close()
}

// notify returns a paho connection-lost handler that reports on ch without
// ever blocking paho.
func notify(ch chan error) paho.ConnectionLostHandler {
	return func(_ paho.Client, err error) {
		select {
		case ch <- err:
		default:
		}
	}
}
