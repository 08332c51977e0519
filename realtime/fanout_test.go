package realtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// addStation provisions a station for the env's Stations.
func (e *env) addStation(sid string) {
	e.stations.mu.Lock()
	e.stations.inv[sid] = wire.Inventory{AvailableBatteries: 1, TotalSlots: 4}
	e.stations.mu.Unlock()
}

// stationIn returns a provisioned station whose channel is (in == true) or
// is not (in == false) in shard s.
func (e *env) stationIn(s *shard, in bool) string {
	e.t.Helper()
	for i := range 1000 {
		sid := fmt.Sprintf("st-%d", i)
		if (e.hub.shardOf(chanKey{store.OneStation, sid}) == s) == in {
			e.addStation(sid)
			return sid
		}
	}
	e.t.Fatal("no station id for the shard")
	return ""
}

func (e *env) allShard() *shard { return e.hub.shardOf(chanKey{kind: store.AllStations}) }

// hold takes s's lock, as a shard goroutine that does not get to run would
// leave it, and returns the release; a failing test releases it too.
func (e *env) hold(s *shard) (release func()) {
	s.mu.Lock()
	var once sync.Once
	release = func() { once.Do(s.mu.Unlock) }
	e.t.Cleanup(release)
	return release
}

// dialLive dials path and reads the hello and n snapshot frames.
func (e *env) dialLive(path string, snapshots int) *websocket.Conn {
	e.t.Helper()
	c := e.mustDial(path, nil)
	if m := readMsg(e.t, c); m.Type != "hello" {
		e.t.Fatalf("%s: first message %+v, want hello", path, m)
	}
	for range snapshots {
		if m := readMsg(e.t, c); !m.Snapshot {
			e.t.Fatalf("%s: %+v, want a snapshot", path, m)
		}
	}
	return c
}

func seqsOf(evs []store.Event) []uint64 {
	out := make([]uint64, len(evs))
	for i := range evs {
		out[i] = evs[i].Seq
	}
	return out
}

// TestCommitterNotBlockedByStuckShard holds one shard's lock, as a shard
// that never gets to run would, while commits go on through the real store:
// every commit returns (store.Update waits for its commit listener, Publish),
// and a client of another shard gets every event. Once the shard runs again
// its client gets everything, in order.
func TestCommitterNotBlockedByStuckShard(t *testing.T) {
	e := newEnv(t, Config{Shards: 4}, store.Options{})
	stuck := e.allShard()
	other := e.stationIn(stuck, false)
	all := e.dialLive("/ws/stations/", 3)
	one := e.dialLive("/ws/stations/"+other+"/", 1)

	release := e.hold(stuck)
	var want []uint64
	for i := range 200 {
		want = append(want, seqsOf(e.append(stationEvent(other, i%8)))...)
	}
	if got := readUntil(t, one, want[len(want)-1]); !slices.Equal(got, want) {
		t.Fatalf("client of a running shard got %d events, want %d", len(got), len(want))
	}
	release()
	if got := readUntil(t, all, want[len(want)-1]); !slices.Equal(got, want) {
		t.Fatalf("client of the stuck shard got %d events, want %d", len(got), len(want))
	}
}

// TestCommitterNotBlockedByStuckClient: a client that never reads, while
// large events are committed through the real store, neither holds up the
// commits nor the other client of its channel (same shard); commits go on
// until it is closed as a slow consumer, and the other client has every
// event in order.
func TestCommitterNotBlockedByStuckClient(t *testing.T) {
	e := newEnv(t, Config{QueueBytes: 256 << 10}, store.Options{})
	stalled := e.dialLive("/ws/stations/", 2) // never read again until the end
	fast := e.dialLive("/ws/stations/", 2)
	progress := make(chan uint64, 64)
	go func() {
		defer close(progress)
		for {
			m, err := tryRead(fast, 10*time.Second)
			if err != nil {
				return
			}
			progress <- m.Seq
		}
	}()
	pad := strings.Repeat("x", 8<<10)
	var got, want []uint64
	for e.metricValue("swapd_ws_slow_client_closes_total", "", "") == 0 {
		if len(want) > 20000 { // 160 MB: far past every socket buffer
			t.Fatal("the stalled client was never closed")
		}
		ev := store.Event{Type: wire.TypeInventoryUpdate, StationID: "s1", Fields: []byte(`{"station_id":"s1","pad":"` + pad + `"}`)}
		want = append(want, seqsOf(e.append(ev))...)
		// Drain what the fast client got so far, without waiting for it:
		// commits do not wait for clients.
		for drained := false; !drained; {
			select {
			case s, ok := <-progress:
				if !ok {
					t.Fatalf("fast client lost its connection after %d events", len(got))
				}
				got = append(got, s)
			default:
				drained = true
			}
		}
	}
	for len(got) < len(want) {
		s, ok := <-progress
		if !ok {
			t.Fatalf("fast client lost its connection after %d of %d events", len(got), len(want))
		}
		got = append(got, s)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("fast client got %d events, want %d in order", len(got), len(want))
	}
	if v := e.metricValue("swapd_ws_slow_client_closes_total", "", ""); v != 1 {
		t.Fatalf("slow closes = %v, want 1 (the stalled client)", v)
	}
	var err error
	for err == nil {
		_, err = tryRead(stalled, 10*time.Second)
	}
	if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code != websocket.CloseTryAgainLater && ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("stalled client: close %d, want 1013 (or 1006 after a write timeout)", ce.Code)
	}
}

// TestFanoutOverflowCloses1013: a shard that falls more than FanoutQueue
// events behind drops them and closes its clients with 1013; they resume
// with since and get every event, without gap or duplicate.
func TestFanoutOverflowCloses1013(t *testing.T) {
	e := newEnv(t, Config{Shards: 4, FanoutQueue: 8}, store.Options{})
	all := e.dialLive("/ws/stations/", 2)

	release := e.hold(e.allShard())
	var want []uint64
	for i := range 30 {
		want = append(want, seqsOf(e.append(stationEvent("s1", i%8)))...)
	}
	release()
	var got []uint64
	var err error
	for {
		var m msg
		if m, err = tryRead(all, 10*time.Second); err != nil {
			break
		}
		got = append(got, m.Seq)
	}
	if !websocket.IsCloseError(err, websocket.CloseTryAgainLater) {
		t.Fatalf("client of the overflowed shard: %v, want close 1013", err)
	}
	if len(got) == len(want) || !slices.Equal(got, want[:len(got)]) {
		t.Fatalf("before the close the client got %v, want a prefix of %v", got, want)
	}
	if v := e.metricValue("swapd_ws_fanout_overflows_total", "", ""); v < 1 {
		t.Fatalf("overflows = %v, want ≥ 1", v)
	}
	since := uint64(0)
	if len(got) > 0 {
		since = got[len(got)-1]
	}
	again := e.mustDial(fmt.Sprintf("/ws/stations/?since=%d", since), nil)
	if h := readMsg(t, again); !h.Recovered {
		t.Fatalf("resume: %+v, want recovered", h)
	}
	if rest := readUntil(t, again, want[len(want)-1]); !slices.Equal(append(got, rest...), want) {
		t.Fatalf("before and after the resume: %v + %v, want %v", got, rest, want)
	}
}

// TestPerChannelOrderAcrossShards: commits from several goroutines, of
// events on many stations and users spread over the shards, reach every
// channel's clients in seq order, each exactly once.
func TestPerChannelOrderAcrossShards(t *testing.T) {
	e := newEnv(t, Config{Shards: 4}, store.Options{})
	sids := []string{"s1", "s2"}
	for i := range 6 {
		sid := fmt.Sprintf("o%d", i)
		e.addStation(sid)
		sids = append(sids, sid)
	}
	all := e.dialLive("/ws/stations/", len(sids))
	byStation := map[string]*websocket.Conn{}
	for _, sid := range sids {
		byStation[sid] = e.dialLive("/ws/stations/"+sid+"/", 1)
	}
	byUser := map[string]*websocket.Conn{}
	for uid, tok := range map[string]string{"u1": "tok-u1", "u2": "tok-u2"} {
		c := e.mustDial("/ws/notifications/", bearer(tok))
		readMsg(t, c)
		byUser[uid] = c
	}

	var mu sync.Mutex
	want := map[string][]uint64{} // channel name → seqs, filled after commits
	var committed []store.Event
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 60 {
				var evs []store.Event
				for j := range 1 + i%3 {
					k := w + i + j
					if (i+j)%4 == 0 {
						evs = append(evs, userEvent([]string{"u1", "u2"}[k%2], "t"))
					} else {
						evs = append(evs, stationEvent(sids[k%len(sids)], k%8))
					}
				}
				out := e.append(evs...)
				mu.Lock()
				committed = append(committed, out...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(committed, func(a, b store.Event) int { return int(a.Seq) - int(b.Seq) })
	for _, ev := range committed {
		if ev.UserID != "" {
			want["user:"+ev.UserID] = append(want["user:"+ev.UserID], ev.Seq)
			continue
		}
		want["stations"] = append(want["stations"], ev.Seq)
		want["station:"+ev.StationID] = append(want["station:"+ev.StationID], ev.Seq)
	}
	check := func(name string, c *websocket.Conn) {
		w := want[name]
		if len(w) == 0 {
			t.Fatalf("%s: no events committed", name)
		}
		if got := readUntil(t, c, w[len(w)-1]); !slices.Equal(got, w) {
			t.Errorf("%s: got %d events, want %d in seq order", name, len(got), len(w))
		}
	}
	check("stations", all)
	for sid, c := range byStation {
		check("station:"+sid, c)
	}
	for uid, c := range byUser {
		check("user:"+uid, c)
	}
}

// TestEncodeOnce: every committed event is framed once, whatever the
// number of its recipients and of the shards they are in; an event nobody
// listens to is not framed at all.
func TestEncodeOnce(t *testing.T) {
	e := newEnv(t, Config{Shards: 4}, store.Options{})
	other := e.stationIn(e.allShard(), false)
	var conns []*websocket.Conn
	for range 5 {
		conns = append(conns, e.dialLive("/ws/stations/", 3))
		conns = append(conns, e.dialLive("/ws/stations/"+other+"/", 1))
	}
	before := e.metricValue("swapd_ws_frames_encoded_total", "", "")
	var evs []store.Event
	for i := range 10 {
		evs = append(evs, stationEvent(other, i%8))
	}
	evs = append(evs, userEvent("nobody", "unheard"))
	out := e.append(evs...)
	last := out[len(out)-2].Seq
	for _, c := range conns {
		if got := readUntil(t, c, last); len(got) != 10 {
			t.Fatalf("a client got %d events, want 10", len(got))
		}
	}
	if n := e.metricValue("swapd_ws_frames_encoded_total", "", "") - before; n != 10 {
		t.Fatalf("%v frames encoded for 10 events with 10 recipients each in two shards, want 10", n)
	}
}

// TestResumeHandoffUnderConcurrentCommits connects clients, with since and
// without, while commits go on: each gets its channel's events from where
// it starts to the end, in order, without gap or duplicate, across the
// hand-over from replay (or snapshot) to live events.
func TestResumeHandoffUnderConcurrentCommits(t *testing.T) {
	e := newEnv(t, Config{Shards: 4, ReplayPage: 3}, store.Options{})
	var mu sync.Mutex
	var s1 []uint64 // seqs of s1 events, in commit order
	stop := make(chan struct{})
	committerDone := make(chan struct{})
	go func() {
		defer close(committerDone)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			out := e.append(stationEvent("s1", i%8), stationEvent("s2", i%8), stationEvent("s1", (i+1)%8))
			mu.Lock()
			s1 = append(s1, out[0].Seq, out[2].Seq)
			mu.Unlock()
		}
	}()
	type joined struct {
		c      *websocket.Conn
		path   string
		resume bool
		since  uint64
	}
	var js []joined
	for i := range 30 {
		mu.Lock()
		var since uint64
		if n := len(s1); n > 0 {
			since = s1[n-1-(i*7)%n]
		}
		mu.Unlock()
		ch := []string{"/ws/stations/", "/ws/stations/s1/"}[i%2]
		j := joined{path: ch, resume: i%3 != 0, since: since}
		path := ch
		if j.resume {
			path += fmt.Sprintf("?since=%d", since)
		}
		j.c = e.mustDial(path, nil)
		js = append(js, j)
	}
	close(stop)
	<-committerDone
	mu.Lock()
	final := s1[len(s1)-1]
	all := make([]uint64, 0, 2*len(s1))
	for s := s1[0]; s <= final; s++ {
		all = append(all, s) // every seq is a station event (s1 or s2)
	}
	mu.Unlock()
	for _, j := range js {
		h := readMsg(t, j.c)
		if h.Type != "hello" || h.Recovered != j.resume {
			t.Fatalf("%s since %d: hello %+v", j.path, j.since, h)
		}
		from := h.Seq
		if j.resume {
			from = j.since
		} else {
			n := 2 // s1 and s2
			if j.path == "/ws/stations/s1/" {
				n = 1
			}
			for range n {
				if m := readMsg(t, j.c); !m.Snapshot {
					t.Fatalf("%s: %+v before the snapshots ended", j.path, m)
				}
			}
		}
		var wantSeqs []uint64
		src := all
		if j.path == "/ws/stations/s1/" {
			src = s1
		}
		for _, s := range src {
			if s > from {
				wantSeqs = append(wantSeqs, s)
			}
		}
		if len(wantSeqs) == 0 {
			continue
		}
		if got := readUntil(t, j.c, final); !slices.Equal(got, wantSeqs) {
			t.Fatalf("%s from %d (resume %v): got %d events %v…, want %d %v…", j.path, from, j.resume,
				len(got), got[:min(5, len(got))], len(wantSeqs), wantSeqs[:min(5, len(wantSeqs))])
		}
	}
}
