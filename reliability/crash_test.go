package reliability

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/wire"
)

// wsWatcher is an app client on /ws/stations/ recording every event.
type wsWatcher struct {
	conn  *websocket.Conn
	hello wire.Hello
	mu    sync.Mutex
	evs   []frame // live and replayed events, in arrival order
	done  chan struct{}
}

func watchStations(t *testing.T, httpBase, query string) *wsWatcher {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(httpBase, "http")+"/ws/stations/"+query, nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	w := &wsWatcher{conn: c, done: make(chan struct{})}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := c.ReadJSON(&w.hello); err != nil || w.hello.Type != wire.TypeHello {
		t.Fatalf("hello: %+v %v", w.hello, err)
	}
	c.SetReadDeadline(time.Time{})
	go func() {
		defer close(w.done)
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			var f struct {
				frame
				Snapshot bool `json:"snapshot"`
			}
			if json.Unmarshal(b, &f) != nil || f.Snapshot || f.Type == wire.TypePong {
				continue
			}
			w.mu.Lock()
			w.evs = append(w.evs, f.frame)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-w.done })
	return w
}

func (w *wsWatcher) events() []frame {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]frame(nil), w.evs...)
}

func (w *wsWatcher) lastSeq() uint64 {
	evs := w.events()
	if len(evs) == 0 {
		return w.hello.Seq
	}
	return evs[len(evs)-1].Seq
}

// pubState is what one station publisher knows: which seqs got a PUBACK.
type pubState struct {
	mu    sync.Mutex
	acked map[uint64]bool
	next  uint64 // the next seq to (re)send
}

// TestCrashUnderTelemetryLoad SIGKILLs swapd while several stations publish
// QoS 1 telemetry, restarts it on the same data dir, lets the stations
// resend what was not acknowledged and go on, and checks that every
// acknowledged message has its effect in the event log exactly once and
// that the bbolt file is consistent.
func TestCrashUnderTelemetryLoad(t *testing.T) {
	const (
		stations  = 4
		slots     = 8
		killAfter = 1000 // acknowledged messages before the kill
		after     = 20   // messages per station after the restart
	)
	dir := t.TempDir()
	p := startSwapd(t, dir)
	ids := make([]string, stations)
	for i := range ids {
		ids[i] = fmt.Sprintf("CR-%d", i+1)
	}
	secrets := provision(t, p.admin(), slots, ids...)
	states := map[string]*pubState{}
	for _, id := range ids {
		states[id] = &pubState{acked: map[uint64]bool{}, next: 1}
	}
	boot := func(sid string) string { return "boot-" + sid }

	// run publishes seqs from st.next until stop is closed or the
	// connection fails; it returns after the first failure.
	var total atomic.Int64
	run := func(addr, sid string, limit uint64, stop <-chan struct{}) error {
		s, err := dialStation(addr, sid, secrets[sid], nil)
		if err != nil {
			return err
		}
		defer s.close()
		st := states[sid]
		for {
			select {
			case <-stop:
				return nil
			default:
			}
			st.mu.Lock()
			seq := st.next
			st.mu.Unlock()
			if limit > 0 && seq > limit {
				return nil
			}
			if err := s.publish(wire.KindTelemetry, telemetryFor(sid, boot(sid), seq, slots), false); err != nil {
				return err
			}
			st.mu.Lock()
			st.acked[seq] = true
			st.next = seq + 1
			st.mu.Unlock()
			total.Add(1)
		}
	}

	// An app watches every station event through the crash.
	watch1 := watchStations(t, p.http, "")

	// Phase 1: load, then SIGKILL in the middle of it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Go(func() { _ = run(p.mqtt, id, 0, stop) })
	}
	waitUntil(t, 60*time.Second, "acknowledged telemetry before the kill", func() bool { return total.Load() >= killAfter })
	p.kill()
	close(stop)
	wg.Wait()
	ackedBefore := total.Load()

	checkDB(t, filepath.Join(dir, "swapd.db"))

	// Phase 2: restart on the same data; each station resends from its
	// first unacknowledged seq (same bytes) and publishes a few more.
	p2 := startSwapd(t, dir)
	<-watch1.done // the crash closed it
	seen1 := watch1.events()
	watch2 := watchStations(t, p2.http, fmt.Sprintf("?since=%d", watch1.lastSeq()))
	if !watch2.hello.Recovered {
		t.Errorf("resume after the crash with since=%d: recovered=false", watch1.lastSeq())
	}
	errs := make(chan error, stations)
	for _, id := range ids {
		st := states[id]
		st.mu.Lock()
		limit := st.next + after
		st.mu.Unlock()
		wg.Go(func() { errs <- run(p2.mqtt, id, limit, nil) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publishing after the restart: %v", err)
		}
	}
	// Read the resumed stream up to the log's end (a new connection's hello
	// carries the last seq).
	last := watchStations(t, p2.http, "").hello.Seq
	waitUntil(t, 20*time.Second, "the resumed stream to reach the end of the log", func() bool { return watch2.lastSeq() >= last })
	p2.stop(t)

	// Every acknowledged message has its battery_added, exactly once;
	// nothing appears twice.
	frames := checkDB(t, filepath.Join(dir, "swapd.db"))
	added := map[string]int{}
	for _, f := range frames {
		if f.Type == wire.TypeBatteryAdded {
			added[f.BatteryID]++
		}
	}
	var acked, missing, dups int
	for _, id := range ids {
		st := states[id]
		for seq := range st.acked {
			acked++
			if seq == 1 {
				continue // the first report sets the slots without battery_added
			}
			switch n := added[batteryFor(id, seq)]; {
			case n == 0:
				missing++
				t.Errorf("%s seq %d was acknowledged but its battery_added is not in the log", id, seq)
			case n > 1:
				dups++
				t.Errorf("%s seq %d: battery_added %d times", id, seq, n)
			}
		}
	}
	for b, n := range added {
		if n > 1 && dups == 0 {
			t.Errorf("battery %s added %d times", b, n)
		}
	}
	// What the app saw before the crash is in the log (events reach apps
	// only after their commit), and the two streams together are the
	// station events of the log, in order, without gap or duplicate.
	bySeq := map[uint64]frame{}
	var stationSeqs []uint64
	for _, f := range frames {
		bySeq[f.Seq] = f
		if f.StationID != "" && f.Type != wire.TypeBookingConfirmed && f.Type != wire.TypeBookingReady && f.Type != wire.TypeNotification {
			stationSeqs = append(stationSeqs, f.Seq)
		}
	}
	for _, f := range seen1 {
		if g, ok := bySeq[f.Seq]; !ok || g.Type != f.Type || g.BatteryID != f.BatteryID {
			t.Errorf("the app saw event %d (%s %s) before the crash; the log has %+v", f.Seq, f.Type, f.BatteryID, g)
		}
	}
	stream := append(seen1, watch2.events()...)
	j := 0
	for _, seq := range stationSeqs {
		if seq <= watch1.hello.Seq {
			continue // before the app connected
		}
		if j >= len(stream) || stream[j].Seq != seq {
			got := uint64(0)
			if j < len(stream) {
				got = stream[j].Seq
			}
			t.Fatalf("app stream diverges from the log at position %d: got seq %d, want %d", j, got, seq)
		}
		j++
	}
	if j != len(stream) {
		t.Errorf("app stream has %d events beyond the log's station events", len(stream)-j)
	}

	t.Logf("crash under load: %d stations, %d acknowledged before SIGKILL, %d acknowledged in all, %d effects missing, %d duplicated, %d events in the log; app saw %d events before the crash and resumed with %d, no gap, no duplicate",
		stations, ackedBefore, acked, missing, dups, len(frames), len(seen1), len(watch2.events()))
}
