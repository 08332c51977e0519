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

	"github.com/swapbridge/swapbridge/internal/testwait"
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

// TestCrashUnderTelemetryLoad SIGKILLs swapd three times while several
// stations publish QoS 1 telemetry and an app watches /ws/stations/. After
// each kill swapd restarts on the same data dir, the stations resend what
// was not acknowledged and go on, and the app resumes with since=. In the
// end every acknowledged message has its effect in the event log exactly
// once, the bbolt file is consistent after every kill, every event the app
// saw before a crash is in the log, and the app's streams together are the
// log without gap or duplicate.
func TestCrashUnderTelemetryLoad(t *testing.T) {
	const (
		stations  = 4
		slots     = 8
		crashes   = 3
		killEvery = 600 // acknowledged messages between kills
		after     = 20  // messages per station after the last restart
	)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "swapd.db")
	// Every acknowledged message's effect is checked by its battery_added
	// event, so the per-station event budget (which folds such events into
	// inventory_update past 10/s) is off.
	env := []string{"SWAPD_EVENTS_STATION_RATE=-1"}
	p := startSwapd(t, dir, env...)
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

	// An app watches every station event through the crashes.
	watch := watchStations(t, p.http, "")
	firstSeq := watch.hello.Seq
	var seen []frame // what the app received, over all its connections
	var ackedAtKill []int64
	var wg sync.WaitGroup
	for c := range crashes {
		if c > 0 {
			p = startSwapd(t, dir, env...)
			since := watch.lastSeq()
			watch = watchStations(t, p.http, fmt.Sprintf("?since=%d", since))
			if !watch.hello.Recovered {
				t.Errorf("resume after crash %d with since=%d: recovered=false", c, since)
			}
		}
		// Load, then SIGKILL in the middle of it.
		stop := make(chan struct{})
		for _, id := range ids {
			wg.Go(func() { _ = run(p.mqtt, id, 0, stop) })
		}
		goal := int64((c + 1) * killEvery)
		testwait.For(t, 60*time.Second, "acknowledged telemetry before the kill", func() bool { return total.Load() >= goal })
		p.kill()
		close(stop)
		wg.Wait()
		ackedAtKill = append(ackedAtKill, total.Load())
		<-watch.done // the crash closed it
		seen = append(seen, watch.events()...)

		// The file is consistent, and holds every event the app saw.
		logged := map[uint64]frame{}
		for _, f := range checkDB(t, dbPath) {
			logged[f.Seq] = f
		}
		for _, f := range watch.events() {
			if g, ok := logged[f.Seq]; !ok || g.Type != f.Type || g.BatteryID != f.BatteryID {
				t.Errorf("crash %d: the app saw event %d (%s %s); the log has %+v", c+1, f.Seq, f.Type, f.BatteryID, g)
			}
		}
	}

	// Last restart: each station resends from its first unacknowledged seq
	// (same bytes) and publishes a few more.
	p = startSwapd(t, dir, env...)
	watch = watchStations(t, p.http, fmt.Sprintf("?since=%d", watch.lastSeq()))
	errs := make(chan error, stations)
	for _, id := range ids {
		st := states[id]
		st.mu.Lock()
		limit := st.next + after
		st.mu.Unlock()
		wg.Go(func() { errs <- run(p.mqtt, id, limit, nil) })
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
	last := watchStations(t, p.http, "").hello.Seq
	testwait.For(t, 20*time.Second, "the resumed stream to reach the end of the log", func() bool { return watch.lastSeq() >= last })
	p.stop(t)

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
	// The app's streams together are the station events of the log, in
	// order, without gap or duplicate.
	var stationSeqs []uint64
	for _, f := range frames {
		if f.StationID != "" && f.Type != wire.TypeBookingConfirmed && f.Type != wire.TypeBookingReady && f.Type != wire.TypeNotification {
			stationSeqs = append(stationSeqs, f.Seq)
		}
	}
	stream := append(seen, watch.events()...)
	j := 0
	for _, seq := range stationSeqs {
		if seq <= firstSeq {
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

	t.Logf("crash under load: %d stations, %d SIGKILLs with %v messages acknowledged at each, %d acknowledged in all; %d effects missing, %d duplicated; %d events in the log, the app received %d of them over %d connections, no gap, no duplicate",
		stations, crashes, ackedAtKill, acked, missing, dups, len(frames), len(stream), crashes+1)
}
