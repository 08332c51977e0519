package stationagent

import (
	"context"
	"encoding/json"

	"io"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/wire"
)

// msg is one message seen by a test observer.
type msg struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// broker is an in-process mochi broker with an allow-all hook. Every
// message published on swap/# is copied to Msgs by an inline subscription
// registered before the listener starts, so nothing is missed.
type broker struct {
	*mqtttest.Broker
	Msgs chan msg
}

func startBroker(t testing.TB, addr string) *broker {
	t.Helper()
	msgs := make(chan msg, 10000)
	b := mqtttest.StartBroker(t, addr, nil, func(srv *mqtt.Server) error {
		return srv.Subscribe("swap/#", 1, func(cl *mqtt.Client, sub packets.Subscription, pk packets.Packet) {
			select {
			case msgs <- msg{Topic: pk.TopicName, Payload: append([]byte(nil), pk.Payload...), QoS: pk.FixedHeader.Qos, Retained: pk.FixedHeader.Retain}:
			default:
				t.Error("broker message buffer full")
			}
		})
	})
	return &broker{Broker: b, Msgs: msgs}
}

// next waits for the next message matching ok.
func (b *broker) next(t *testing.T, what string, ok func(msg) bool) msg {
	t.Helper()
	return waitMsg(t, b.Msgs, what, ok)
}

func waitMsg(t *testing.T, ch <-chan msg, what string, ok func(msg) bool) msg {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-ch:
			if ok(m) {
				return m
			}
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func isTopic(sid string, kind wire.TopicKind) func(msg) bool {
	return func(m msg) bool { return m.Topic == wire.Topic(sid, kind) }
}

func decode[T any](t *testing.T, m msg) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		t.Fatalf("decode %s %q: %v", m.Topic, m.Payload, err)
	}
	return v
}

// observer is a paho client subscribed to everything under swap/.
type observer struct {
	c    paho.Client
	Msgs chan msg
}

func newObserver(t *testing.T, url, id string) *observer {
	t.Helper()
	o := &observer{Msgs: make(chan msg, 10000)}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(true).SetAutoReconnect(false)
	o.c = paho.NewClient(opts)
	if tok := o.c.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer connect: %v", tok.Error())
	}
	tok := o.c.Subscribe("swap/#", 1, func(_ paho.Client, m paho.Message) {
		o.Msgs <- msg{Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retained: m.Retained()}
	})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("observer subscribe: %v", tok.Error())
	}
	t.Cleanup(func() { o.c.Disconnect(0) })
	return o
}

func (o *observer) publish(t *testing.T, topic string, v any) {
	t.Helper()
	b, _ := json.Marshal(v)
	if tok := o.c.Publish(topic, 1, false, b); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

func testConfig(t testing.TB, server, dir string) Config {
	return Config{
		Server:           server,
		StationID:        "st-1",
		Secret:           "s3cret",
		DataDir:          dir,
		Driver:           DriverSim,
		Sim:              sim.Config{Slots: 4, Seed: 7, ReturnEvery: -1, Occupied: 4},
		PollInterval:     10 * time.Millisecond,
		SnapshotInterval: time.Hour,
		ReconnectMin:     10 * time.Millisecond,
		ReconnectMax:     100 * time.Millisecond,
		ConnectTimeout:   2 * time.Second,
		KeepAlive:        5 * time.Second,
	}
}

// running is an agent running in the background of a test.
type running struct {
	A    *Agent
	stop context.CancelFunc
	done chan error
}

func startAgent(t testing.TB, cfg Config, opts ...Option) *running {
	t.Helper()
	a, err := New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{A: a, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.Stop(t) })
	return r
}

// Stop cancels the agent and waits for Run to return. Idempotent.
func (r *running) Stop(t testing.TB) {
	t.Helper()
	r.stop()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop")
	}
}

// proxy forwards TCP connections to target and can cut them all.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(up, c); up.Close() })
			p.wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) URL() string { return "tcp://" + p.ln.Addr().String() }

// cut closes every proxied connection abruptly.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		c.Close()
	}
	p.conns = nil
}

// countingDriver wraps a Driver and counts unlocks.
type countingDriver struct {
	Driver
	mu      sync.Mutex
	unlocks int
}

func (d *countingDriver) Unlock(ctx context.Context, slot int) error {
	d.mu.Lock()
	d.unlocks++
	d.mu.Unlock()
	return d.Driver.Unlock(ctx, slot)
}

func (d *countingDriver) Unlocks() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.unlocks
}

func newSim(t *testing.T, cfg sim.Config) *sim.Driver {
	t.Helper()
	d, err := sim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (o *observer) next(t *testing.T, what string, ok func(msg) bool) msg {
	t.Helper()
	return waitMsg(t, o.Msgs, what, ok)
}

func ackFor(sid, id string) func(msg) bool {
	return func(m msg) bool {
		if m.Topic != wire.Topic(sid, wire.KindAck) {
			return false
		}
		var a wire.Ack
		return json.Unmarshal(m.Payload, &a) == nil && a.ID == id
	}
}
