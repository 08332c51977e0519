package reliability

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/broker"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// stack is swapd's MQTT side assembled in-process (store, bridge, broker)
// with a recorder between the broker and the bridge, so a test can see
// every station message the server acknowledged.
type stack struct {
	st  *store.Store
	brk *broker.Broker
	b   *bridge.Bridge
	rec *recorder
}

// recorder is the broker's Handler: it passes everything to the bridge and
// records what the bridge accepted (and so what got a PUBACK).
type recorder struct {
	next broker.Handler

	mu    sync.Mutex
	tel   map[string]map[uint64][]byte // boot → seq → first payload
	redel int                          // telemetry delivered again (same boot and seq)
	diff  []string                     // redeliveries whose bytes differed
	acks  map[string]int               // command id → acks received
	gate  chan struct{}                // when non-nil, HandlePublish waits for it to close
}

func (r *recorder) HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return r.next.HandlePublish(sid, kind, payload, func(err error) {
		if err == nil {
			r.accepted(kind, payload)
		}
		done(err)
	})
}

// accepted records a message the bridge reported durable.
func (r *recorder) accepted(kind wire.TopicKind, payload []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch kind {
	case wire.KindTelemetry:
		var t wire.Telemetry
		if json.Unmarshal(payload, &t) != nil {
			return
		}
		m := r.tel[t.BootID]
		if m == nil {
			m = map[uint64][]byte{}
			r.tel[t.BootID] = m
		}
		if first, ok := m[t.Seq]; ok {
			r.redel++
			if !bytes.Equal(first, payload) {
				r.diff = append(r.diff, t.BootID)
			}
			return
		}
		m[t.Seq] = bytes.Clone(payload)
	case wire.KindAck:
		var a wire.Ack
		if json.Unmarshal(payload, &a) == nil {
			r.acks[a.ID]++
		}
	}
}

func (r *recorder) StationConnected(sid string)    { r.next.StationConnected(sid) }
func (r *recorder) StationDisconnected(sid string) { r.next.StationDisconnected(sid) }

// seqs returns the accepted seqs of boot: the highest and the missing
// ones below it.
func (r *recorder) seqs(boot string) (max uint64, missing []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.tel[boot]
	for s := range m {
		if s > max {
			max = s
		}
	}
	for s := uint64(1); s <= max; s++ {
		if _, ok := m[s]; !ok {
			missing = append(missing, s)
		}
	}
	return max, missing
}

func (r *recorder) ackCount(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acks[id]
}

// setGate makes HandlePublish wait (holding back every PUBACK) until the
// returned function is called.
func (r *recorder) setGate() (open func()) {
	g := make(chan struct{})
	r.mu.Lock()
	r.gate = g
	r.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			r.mu.Lock()
			r.gate = nil
			r.mu.Unlock()
			close(g)
		})
	}
}

func newStack(t *testing.T, cfg bridge.Config) *stack {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	brk, err := broker.New(broker.Config{Addr: "127.0.0.1:0", NotFound: store.ErrNotFound}, st)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(cfg, st, brk)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{next: b, tel: map[string]map[uint64][]byte{}, acks: map[string]int{}}
	brk.SetHandler(rec)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := brk.Start(); err != nil {
		t.Fatal(err)
	}
	s := &stack{st: st, brk: brk, b: b, rec: rec}
	t.Cleanup(func() {
		brk.Close()
		b.Close()
		st.Close()
	})
	return s
}

// provision creates a station with the secret and returns its id.
func (s *stack) provision(t *testing.T, sid, secret string, slots int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info := store.Station{ID: sid, Name: sid, Slots: slots, SecretHash: sha256.Sum256([]byte(secret)), CreatedAt: time.Now().UTC()}
	if err := s.st.CreateStation(ctx, info); err != nil {
		t.Fatal(err)
	}
	if err := s.b.StationProvisioned(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	s.brk.Invalidate(sid)
}

// user creates a user (bookings need one).
func (s *stack) user(t *testing.T, uid string) {
	t.Helper()
	if err := s.st.CreateUser(context.Background(), store.User{ID: uid, TokenHash: sha256.Sum256([]byte("tok-" + uid)), CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
}
