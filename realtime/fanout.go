package realtime

import (
	"context"
	"runtime/pprof"
	"strconv"
	"sync"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
)

// Fan-out runs off the store's committer. Publish, the commit listener,
// only routes: it appends each event to the queue of the shard that owns
// each of its channels and returns. Every shard has its own subscribers,
// its own lock and its own goroutine, which takes everything queued and
// queues it on the subscribers' connections (which never blocks on the
// network either; see client.enqueueEvent).
//
// Order: Publish is called with events in seq order, one call at a time;
// a channel lives in exactly one shard, whose queue is FIFO, and a
// connection subscribes to exactly one channel. So every connection gets
// its channel's events in seq order.
//
// A shard whose queue is over Config.FanoutQueue when a commit's events
// arrive is behind (its goroutine did not get the CPU for that many
// events): the queued events and the new ones are dropped, and before the
// shard delivers anything else it closes every connection it has with 1013
// (reconnect with since). Those clients resume from the log, which holds
// every dropped event, so nobody sees a gap; a connection that subscribes
// after the closes reads the log after the drop, so it too has them. The
// committer is never made to wait.

// frame is one committed event on its way to the connections: its payload
// is framed once, by the first shard that has a recipient for it, and the
// same bytes are queued on every connection of every shard.
type frame struct {
	seq     uint64
	payload []byte
	once    sync.Once
	wire    []byte
}

// bytes returns the event as one WebSocket text frame (header + payload).
func (f *frame) bytes(m *metrics) []byte {
	f.once.Do(func() {
		f.wire = textFrame(f.payload)
		m.framesEncoded.Inc()
	})
	return f.wire
}

// textFrame returns payload framed as one unmasked text frame.
func textFrame(payload []byte) []byte {
	b := make([]byte, 0, len(payload)+10)
	b = appendFrameHeader(b, opText, len(payload))
	return append(b, payload...)
}

// chanKey identifies a channel: its kind and id ("" for all stations).
type chanKey struct {
	kind store.ChannelKind
	id   string
}

func keyOf(ch store.Channel) chanKey { return chanKey{ch.Kind, ch.ID} }

// delivery is one event for the subscribers of one channel.
type delivery struct {
	ch chanKey
	f  *frame
}

// shard owns the subscribers of the channels that hash to it.
type shard struct {
	hub  *Hub
	id   int
	wake chan struct{} // capacity 1: something was queued

	mu   sync.Mutex // subs; held while delivering
	subs map[chanKey]subs

	qmu     sync.Mutex // pending, lost
	pending []delivery
	lost    bool // events were dropped: close every connection first

	spare []delivery // the goroutine's empty array, reused for pending
}

// maxSpareDeliveries bounds the queue array a shard keeps for reuse.
const maxSpareDeliveries = 1 << 14

func (h *Hub) shardOf(k chanKey) *shard {
	// FNV-1a over the kind and the id.
	x := uint32(2166136261)
	x = (x ^ uint32(k.kind)) * 16777619
	for i := 0; i < len(k.id); i++ {
		x = (x ^ uint32(k.id[i])) * 16777619
	}
	return h.shards[x%uint32(len(h.shards))]
}

// startShards starts one goroutine per shard; Shutdown stops them.
func (h *Hub) startShards() {
	h.shards = make([]*shard, h.cfg.Shards)
	h.route = make([][]delivery, h.cfg.Shards)
	for i := range h.shards {
		s := &shard{hub: h, id: i, wake: make(chan struct{}, 1), subs: make(map[chanKey]subs)}
		h.shards[i] = s
		h.shardWG.Add(1)
		go pprof.Do(context.Background(), pprof.Labels("realtime", "fanout", "shard", strconv.Itoa(i)), func(context.Context) {
			defer h.shardWG.Done()
			s.run()
		})
	}
}

// Publish hands committed events to the fan-out and returns: it is the
// store's commit listener, called from one goroutine with events in seq
// order, after they are durable. It does not wait for the shards, the
// connections or the network (it takes each involved shard's queue lock
// for one append). Events without Data are skipped. The hub keeps ev.Data
// until written: callers must not modify it afterwards.
func (h *Hub) Publish(events []store.Event) {
	if h.stopped.Load() {
		return
	}
	h.pubMu.Lock()
	defer h.pubMu.Unlock()
	for i := range events {
		ev := &events[i]
		if len(ev.Data) == 0 {
			continue
		}
		f := &frame{seq: ev.Seq, payload: ev.Data}
		switch {
		case ev.UserID != "":
			h.routeTo(chanKey{store.OneUser, ev.UserID}, f)
		case ev.StationID != "":
			h.routeTo(chanKey{store.AllStations, ""}, f)
			h.routeTo(chanKey{store.OneStation, ev.StationID}, f)
		}
	}
	for i, ds := range h.route {
		if len(ds) == 0 {
			continue
		}
		h.shards[i].push(ds)
		clear(ds)
		h.route[i] = ds[:0]
	}
}

func (h *Hub) routeTo(k chanKey, f *frame) {
	s := h.shardOf(k)
	h.route[s.id] = append(h.route[s.id], delivery{k, f})
}

// push appends ds to the shard's queue, or drops the queue when it is over
// its bound (see the comment at the top of this file), and wakes the
// goroutine. It never waits for the goroutine.
func (s *shard) push(ds []delivery) {
	s.qmu.Lock()
	if len(s.pending) > 0 && len(s.pending)+len(ds) > s.hub.cfg.FanoutQueue {
		clear(s.pending)
		s.pending = s.pending[:0]
		s.lost = true
		s.hub.m.fanoutOverflows.Inc()
	} else {
		s.pending = append(s.pending, ds...)
	}
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// depth returns how many deliveries wait in the shard's queue.
func (s *shard) depth() int {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return len(s.pending)
}

func (s *shard) run() {
	h := s.hub
	for {
		select {
		case <-s.wake:
		case <-h.stop:
			return
		}
		s.qmu.Lock()
		ds, lost := s.pending, s.lost
		s.pending, s.lost, s.spare = s.spare, false, nil
		s.qmu.Unlock()
		s.deliver(ds, lost)
		clear(ds)
		if cap(ds) <= maxSpareDeliveries {
			s.spare = ds[:0]
		}
	}
}

// deliver queues ds on the subscribers, after closing every connection of
// the shard if events were lost before ds. One call is one burst for the
// queue bounds (see client.enqueueEvent).
func (s *shard) deliver(ds []delivery, lost bool) {
	h := s.hub
	s.mu.Lock()
	defer s.mu.Unlock()
	if lost {
		n := 0
		for _, set := range s.subs {
			for c := range set {
				c.close(websocket.CloseTryAgainLater, "server fell behind; reconnect with since")
				n++
			}
		}
		h.log.Warn("ws fan-out fell behind; connections closed", "shard", s.id, "conns", n)
	}
	if len(ds) == 0 {
		return
	}
	burst := h.bursts.Add(1)
	for _, d := range ds {
		set := s.subs[d.ch]
		if len(set) == 0 {
			continue
		}
		data := d.f.bytes(h.m)
		for c := range set {
			c.enqueueEvent(d.f.seq, data, burst)
		}
	}
}

func (s *shard) add(c *client) {
	k := keyOf(c.ch)
	s.mu.Lock()
	set := s.subs[k]
	if set == nil {
		set = make(subs)
		s.subs[k] = set
	}
	set[c] = struct{}{}
	s.mu.Unlock()
}

func (s *shard) remove(c *client) {
	k := keyOf(c.ch)
	s.mu.Lock()
	set := s.subs[k]
	delete(set, c)
	if len(set) == 0 {
		delete(s.subs, k)
	}
	s.mu.Unlock()
}
