package bench

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/wire"
)

// baseline is the reference the figures are divided by: a bare embedded
// mochi broker on the same machine, with an inline subscriber on every
// station's telemetry that forwards each message through a bounded queue to
// one consumer goroutine, which decodes the message's ts and records the
// publish→consume latency. No auth, no bridge, no store, no WebSocket.
type baseline struct {
	srv  *mqtt.Server
	addr string
	q    chan []byte
	stop chan struct{}
	done chan struct{}
	run  atomic.Pointer[runner]

	received atomic.Uint64
	dropped  atomic.Uint64
	closeOne sync.Once
}

func startBaseline() (*baseline, error) {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = 1 << 20
	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	tcp := mqtttest.NewTCPListener(srv, "bench", "127.0.0.1:0")
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	b := &baseline{srv: srv, addr: tcp.Address(), q: make(chan []byte, 64<<10), stop: make(chan struct{}), done: make(chan struct{})}
	if err := srv.Subscribe(wire.TopicPrefix+"+/"+string(wire.KindTelemetry), 1, b.inline); err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("baseline broker: %w", err)
	}
	go b.consume()
	return b, nil
}

// inline runs on the publisher's connection goroutine; it must not block.
func (b *baseline) inline(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	select {
	case b.q <- pk.Payload:
	default:
		b.dropped.Add(1)
	}
}

func (b *baseline) consume() {
	defer close(b.done)
	key := []byte(`"ts":"`)
	for {
		var m []byte
		select {
		case m = <-b.q:
		case <-b.stop:
			return
		}
		b.received.Add(1)
		r := b.run.Load()
		if r == nil || !bytes.Contains(m, []byte(`"full":false`)) {
			continue // only measured steps count
		}
		ts := field(m, string(key))
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil {
			r.errorf("baseline: telemetry ts %q: %v", ts, err)
			continue
		}
		r.baseDelivered.Add(1)
		r.latency().Record(time.Since(t))
	}
}

func (b *baseline) close() error {
	var err error
	b.closeOne.Do(func() {
		err = b.srv.Close()
		close(b.stop)
		<-b.done
	})
	return err
}
