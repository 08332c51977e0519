package broker

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/swapbridge/swapbridge/wire"
)

// Pipelined publishes: the broker keeps reading a connection while its
// earlier QoS 1 publishes are in the Handler, and writes their PUBACKs
// itself, in the order the publishes arrived, as each is reported done. A
// failure reported to done closes the connection with no PUBACK for that
// publish or any later one, exactly as an error returned by HandlePublish
// does.

// Acknowledgement states of a pipelined publish.
const (
	ackPending    uint8 = iota
	ackSuccess          // PUBACK success
	ackBadPayload       // MQTT 5: PUBACK 0x99 payload format invalid; 3.1.1: success
)

// ackQueue orders the PUBACKs of one connection's pipelined publishes. Its
// entries are the publishes received and not yet acknowledged, oldest
// first; the oldest done ones are written by a flush goroutine (at most one
// per connection at a time).
type ackQueue struct {
	b     *Broker
	cl    *mqtt.Client
	depth int
	v5    bool

	mu       sync.Mutex
	pending  []ackEntry // oldest first
	base     uint64     // sequence number of pending[0]
	flushing bool
	failed   bool             // the connection is being closed; nothing more is written
	wake     chan struct{}    // closed and cleared on every change, when someone waits
	out      []packets.Packet // the flush goroutine's batch
}

// ackEntry is one publish awaiting its PUBACK.
type ackEntry struct {
	id    uint16 // packet id
	state uint8  // ackPending until done
}

func newAckQueue(b *Broker, cl *mqtt.Client, depth int) *ackQueue {
	return &ackQueue{b: b, cl: cl, depth: depth, v5: cl.Properties.ProtocolVersion == 5}
}

// signal wakes every waiter; q.mu is held.
func (q *ackQueue) signal() {
	if q.wake != nil {
		close(q.wake)
		q.wake = nil
	}
}

// wait releases q.mu until the next change and takes it again.
func (q *ackQueue) wait() {
	if q.wake == nil {
		q.wake = make(chan struct{})
	}
	ch := q.wake
	q.mu.Unlock()
	<-ch
	q.mu.Lock()
}

// reserve appends a publish, waiting while depth publishes are
// unacknowledged; it returns the publish's sequence number, or false if
// the connection is being closed.
func (q *ackQueue) reserve(id uint16) (uint64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pending) >= q.depth && !q.failed {
		q.wait()
	}
	if q.failed {
		return 0, false
	}
	q.pending = append(q.pending, ackEntry{id: id})
	return q.base + uint64(len(q.pending)-1), true
}

// drain waits until every publish reserved so far is acknowledged (its
// PUBACK written) or the connection is being closed; it reports whether
// the connection is still good.
func (q *ackQueue) drain() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for (len(q.pending) > 0 || q.flushing) && !q.failed {
		q.wait()
	}
	return !q.failed
}

// fail stops all writes; reserve and drain return false from now on.
func (q *ackQueue) fail() {
	q.mu.Lock()
	q.failed = true
	q.signal()
	q.mu.Unlock()
}

// complete records the outcome of publish n. An error closes the
// connection with no further PUBACK.
func (q *ackQueue) complete(n uint64, ack uint8, sid string, kind wire.TopicKind, err error) {
	q.mu.Lock()
	if q.failed {
		q.mu.Unlock()
		return
	}
	if err != nil {
		q.failed = true
		q.signal()
		q.mu.Unlock()
		q.b.notAccepted(sid, kind, err)
		// The station will resend: the disconnect is not its Will's.
		atomic.StoreUint32(&q.cl.Properties.Will.Flag, 0)
		// Not on the caller's goroutine: it may be the store's committer.
		q.b.goBackground(func() { q.b.dropClient(q.cl, packets.ErrImplementationSpecificError) })
		return
	}
	q.pending[n-q.base].state = ack
	start := !q.flushing && q.pending[0].state != ackPending
	if start {
		q.flushing = true
	}
	q.mu.Unlock()
	if start && !q.b.goBackground(q.flush) {
		q.fail() // the broker is closing; so is the connection
	}
}

// flush writes the PUBACKs of the oldest done publishes, in order, until
// the oldest is still pending. They go through mochi's WritePacket, like
// every other packet to the client: while mochi holds packets in its write
// buffer (commands being sent), a PUBACK it wrote for a retained status is
// in that buffer too, and one written around it would overtake it.
func (q *ackQueue) flush() {
	for {
		q.mu.Lock()
		k := 0
		for k < len(q.pending) && q.pending[k].state != ackPending {
			k++
		}
		if k == 0 || q.failed {
			q.flushing = false
			q.signal()
			q.mu.Unlock()
			return
		}
		acks := q.out[:0]
		for _, e := range q.pending[:k] {
			pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: e.id}
			if q.v5 && e.state == ackBadPayload {
				pk.ReasonCode = packets.ErrPayloadFormatInvalid.Code
				pk.Properties.ReasonString = packets.ErrPayloadFormatInvalid.Reason
			}
			acks = append(acks, pk)
		}
		q.pending = q.pending[:copy(q.pending, q.pending[k:])]
		q.base += uint64(k)
		q.signal()
		q.mu.Unlock()

		// Only this goroutine writes for the queue until flushing is
		// cleared, so the PUBACKs leave in order.
		for _, pk := range acks {
			if err := q.cl.WritePacket(pk); err != nil {
				clear(acks)
				q.out = acks
				q.fail() // the reader sees the closed connection too
				return
			}
		}
		clear(acks)
		q.out = acks
	}
}

// pipelined hands a QoS 1 station publish to the Handler and
// queues its PUBACK. It always returns ErrRejectPacket: mochi writes
// nothing and delivers nothing for it.
func (h *hook) pipelined(q *ackQueue, sid string, kind wire.TopicKind, pk packets.Packet) error {
	n, ok := q.reserve(pk.PacketID)
	if !ok {
		return packets.ErrRejectPacket
	}
	err := h.b.handler.HandlePublish(sid, kind, pk.Payload, func(err error) {
		q.complete(n, ackSuccess, sid, kind, err)
	})
	switch {
	case err == nil:
	case h.b.badPayload(sid, kind, err):
		q.complete(n, ackBadPayload, sid, kind, nil)
	default:
		q.complete(n, ackSuccess, sid, kind, err)
	}
	return packets.ErrRejectPacket
}
