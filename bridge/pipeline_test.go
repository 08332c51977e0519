package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// doneLog records SubmitPublish done callbacks.
type doneLog struct {
	mu    sync.Mutex
	order []string
	errs  map[string]error
	n     map[string]int
	// lastSeq is the store's newest durable seq when each done ran.
	lastSeq map[string]uint64
	st      *store.Store
	ch      chan string
}

func newDoneLog(st *store.Store) *doneLog {
	return &doneLog{errs: map[string]error{}, n: map[string]int{}, lastSeq: map[string]uint64{}, st: st, ch: make(chan string, 256)}
}

func (d *doneLog) done(name string) func(error) {
	return func(err error) {
		last := d.st.LastSeq()
		d.mu.Lock()
		d.order = append(d.order, name)
		d.errs[name] = err
		d.n[name]++
		d.lastSeq[name] = last
		d.mu.Unlock()
		d.ch <- name
	}
}

// wait waits for the done callbacks of names, in any order.
func (d *doneLog) wait(t *testing.T, names ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case n := <-d.ch:
			delete(want, n)
		case <-deadline:
			t.Fatalf("no done for %v within 10s", want)
		}
	}
}

func (d *doneLog) err(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.errs[name]
}

// submit calls SubmitPublish for a telemetry of sid, named name in log.
func (e *env) submit(log *doneLog, sid, name string, tel *wire.Telemetry) {
	e.t.Helper()
	p, err := json.Marshal(tel)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.SubmitPublish(sid, wire.KindTelemetry, p, log.done(name)); err != nil {
		e.t.Fatalf("SubmitPublish %s: %v", name, err)
	}
}

// holdCommitter blocks the store's committer with an Update whose fn waits
// for release, so that the commits queued meanwhile stay queued.
func holdCommitter(t *testing.T, st *store.Store) (release func()) {
	t.Helper()
	started, gate, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		_, err := st.Update(context.Background(), func(*store.Tx) error {
			close(started)
			<-gate
			return nil
		})
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the blocking Update did not start")
	}
	return sync.OnceFunc(func() {
		close(gate)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("blocking Update: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("blocking Update did not return")
		}
	})
}

// addStation provisions another station with slots slots.
func (e *env) addStation(id string, slots int) {
	e.t.Helper()
	info := store.Station{ID: id, Name: id, Slots: slots, SecretHash: sha256.Sum256([]byte(testSecret))}
	if err := e.st.CreateStation(context.Background(), info); err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.StationProvisioned(context.Background(), info); err != nil {
		e.t.Fatal(err)
	}
}

// online brings sid online with boot "A" and a full report (seq 1) of
// slots slots, the first ready of them holding batteries.
func (e *env) online(sid string, slots, ready int) {
	e.t.Helper()
	for _, m := range []struct {
		kind wire.TopicKind
		v    any
	}{{wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: slots}}, {wire.KindTelemetry, fullOf("A", 1, slots, ready)}} {
		p, _ := json.Marshal(m.v)
		if err := e.b.HandlePublish(sid, m.kind, p); err != nil {
			e.t.Fatalf("%s %s: %v", sid, m.kind, err)
		}
	}
}

// addBattery is telemetry seq of boot "A" putting battery into slot.
func addBattery(seq uint64, slot int, battery string) *wire.Telemetry {
	return telem("A", seq, false, slotOf(slot, battery, 40))
}

// storedState returns the station's state record as stored, and the
// in-memory state encoded the same way.
func (e *env) storedState(sid string) (stored, mem []byte) {
	e.t.Helper()
	err := e.st.View(func(tx *store.Tx) error {
		raw, err := tx.Get(store.KindStationState, sid)
		stored = bytes.Clone(raw)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := e.b.station(sid)
	if err != nil {
		e.t.Fatal(err)
	}
	e.b.lockStation(s)
	mem = appendState(nil, &s.st)
	s.mu.Unlock()
	return stored, mem
}

// batteriesAdded lists the battery ids of sid's battery_added events, in
// log order.
func (e *env) batteriesAdded(sid string) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.events(store.Channel{Kind: store.OneStation, ID: sid}) {
		if ev.Type != wire.TypeBatteryAdded {
			continue
		}
		var f struct {
			BatteryID string `json:"battery_id"`
		}
		if err := json.Unmarshal(ev.Data, &f); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, f.BatteryID)
	}
	return out
}

// Telemetries submitted while the committer is busy are all queued (none
// done yet), then reported done in order once durable; the store holds the
// last state and every event, in order.
func TestSubmitPublishPipelinesInOrder(t *testing.T) {
	e := newEnv(t, 4)
	e.online("S1", 4, 0)
	log := newDoneLog(e.st)
	release := holdCommitter(t, e.st)
	defer release()
	var names, want []string
	for i := range 6 {
		seq := uint64(i + 2)
		name := fmt.Sprintf("seq%d", seq)
		battery := fmt.Sprintf("B%d", seq)
		// Slots 1..4, then 1 and 2 again with another battery: a swap.
		e.submit(log, "S1", name, addBattery(seq, i%4+1, battery))
		names = append(names, name)
		want = append(want, battery)
	}
	// Applied in memory at once, durable later.
	v, err := e.b.StationView("S1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Slots[1].BatteryID == nil || *v.Slots[1].BatteryID != "B7" {
		t.Fatalf("in-memory slot 2 = %v before the commits, want B7", v.Slots[1].BatteryID)
	}
	select {
	case n := <-log.ch:
		t.Fatalf("done of %s while its commit is queued behind a blocked committer", n)
	default:
	}
	release()
	log.wait(t, names...)

	log.mu.Lock()
	if !slices.Equal(log.order, names) {
		t.Errorf("done order %v, want %v", log.order, names)
	}
	for _, n := range names {
		if log.errs[n] != nil || log.n[n] != 1 {
			t.Errorf("%s: done called %d times, err %v", n, log.n[n], log.errs[n])
		}
	}
	log.mu.Unlock()
	got := e.batteriesAdded("S1")
	if !slices.Equal(got, want) {
		t.Fatalf("battery_added in the log: %v, want %v", got, want)
	}
	stored, mem := e.storedState("S1")
	if !bytes.Equal(stored, mem) {
		t.Fatalf("stored state differs from the in-memory one\nstored %s\nmemory %s", stored, mem)
	}
	var st StationState
	if err := decodeState(stored, &st); err != nil || st.Seq != 7 {
		t.Fatalf("stored state seq %d (%v), want 7", st.Seq, err)
	}
	// Survives a restart as it is.
	e.reopen()
	stored2, mem2 := e.storedState("S1")
	if !bytes.Equal(stored2, stored) || !bytes.Equal(mem2, stored) {
		t.Fatal("state after reopen differs from the state before")
	}
}

// A duplicate submitted while the commits it duplicates are queued is done
// only once they are durable.
func TestSubmitPublishDuplicateWaitsForQueued(t *testing.T) {
	e := newEnv(t, 4)
	e.online("S1", 4, 0)
	log := newDoneLog(e.st)
	release := holdCommitter(t, e.st)
	defer release()
	e.submit(log, "S1", "seq2", addBattery(2, 1, "B2"))
	e.submit(log, "S1", "seq3", addBattery(3, 2, "B3"))
	dupDone := make(chan error, 1)
	go func() {
		// Blocks until what it duplicates is durable: it holds the
		// station meanwhile, as the broker's reader would wait.
		p, _ := json.Marshal(addBattery(3, 2, "B3"))
		dupDone <- e.b.SubmitPublish("S1", wire.KindTelemetry, p, log.done("dup"))
	}()
	select {
	case n := <-log.ch:
		t.Fatalf("done of %s while the commits are queued", n)
	case err := <-dupDone:
		t.Fatalf("SubmitPublish of the duplicate returned (%v) while what it duplicates is queued", err)
	case <-time.After(100 * time.Millisecond): // a negative check only
	}
	release()
	log.wait(t, "seq2", "seq3", "dup")
	if err := <-dupDone; err != nil {
		t.Fatalf("SubmitPublish of the duplicate: %v", err)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, n := range []string{"seq2", "seq3", "dup"} {
		if log.errs[n] != nil || log.n[n] != 1 {
			t.Errorf("%s: done called %d times, err %v", n, log.n[n], log.errs[n])
		}
	}
	// The duplicate's done may race the committer's done of seq3 (both
	// follow the commit); what it promises is that seq3 is durable.
	if log.lastSeq["dup"] < log.lastSeq["seq3"] || log.lastSeq["dup"] == 0 {
		t.Errorf("duplicate done at log seq %d, before seq3 was durable (seq %d)", log.lastSeq["dup"], log.lastSeq["seq3"])
	}
	if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"B2", "B3"}) {
		t.Fatalf("battery_added %v, want [B2 B3] (the duplicate has no effect)", got)
	}
}

// A failed pipelined commit breaks the station: its later queued commits
// fail too, the next message is applied on the state reloaded from the
// store, and other stations are not affected.
func TestSubmitPublishFailedCommitResyncs(t *testing.T) {
	e := newEnv(t, 4)
	e.addStation("S2", 4)
	e.online("S1", 4, 0)
	e.online("S2", 4, 0)
	stateBefore, _ := e.storedState("S1")

	errDisk := errors.New("test: disk trouble")
	var armed sync.Once
	fail := func(sid string) error {
		var err error
		if sid == "S1" {
			armed.Do(func() { err = errDisk })
		}
		return err
	}
	failPipelined.Store(&fail)
	t.Cleanup(func() { failPipelined.Store(nil) })

	log := newDoneLog(e.st)
	release := holdCommitter(t, e.st)
	defer release()
	e.submit(log, "S1", "S1-2", addBattery(2, 1, "S1-B2")) // fails
	e.submit(log, "S2", "S2-2", addBattery(2, 1, "S2-B2"))
	e.submit(log, "S1", "S1-3", addBattery(3, 2, "S1-B3")) // derived from the lost one
	e.submit(log, "S1", "S1-4", addBattery(4, 3, "S1-B4"))
	release()
	log.wait(t, "S1-2", "S2-2", "S1-3", "S1-4")
	if err := log.err("S1-2"); !errors.Is(err, errDisk) {
		t.Fatalf("S1-2: done(%v), want the commit's error", err)
	}
	for _, n := range []string{"S1-3", "S1-4"} {
		if err := log.err(n); !errors.Is(err, errResync) {
			t.Errorf("%s: done(%v), want errResync", n, err)
		}
	}
	if err := log.err("S2-2"); err != nil {
		t.Fatalf("S2-2, another station in the same batch: %v", err)
	}

	// The next look at S1 reloads it from the store: nothing of seq 2..4.
	v, err := e.b.StationView("S1")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if v.Slots[i].BatteryID != nil {
			t.Fatalf("slot %d shows %s after its commit failed", i+1, *v.Slots[i].BatteryID)
		}
	}
	stored, mem := e.storedState("S1")
	if !bytes.Equal(stored, stateBefore) || !bytes.Equal(mem, stored) {
		t.Fatalf("S1 after the failure: stored %s, memory %s; want both as before %s", stored, mem, stateBefore)
	}

	// The station resends from seq 2 (nothing was acknowledged): applied,
	// not taken for a duplicate of the lost state.
	e.submit(log, "S1", "S1-2 again", addBattery(2, 1, "S1-B2"))
	e.submit(log, "S1", "S1-3 again", addBattery(3, 2, "S1-B3"))
	e.submit(log, "S2", "S2-3", addBattery(3, 2, "S2-B3"))
	log.wait(t, "S1-2 again", "S1-3 again", "S2-3")
	for _, n := range []string{"S1-2 again", "S1-3 again", "S2-3"} {
		if err := log.err(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"S1-B2", "S1-B3"}) {
		t.Fatalf("S1 battery_added %v, want [S1-B2 S1-B3]", got)
	}
	if got := e.batteriesAdded("S2"); !slices.Equal(got, []string{"S2-B2", "S2-B3"}) {
		t.Fatalf("S2 battery_added %v, want [S2-B2 S2-B3]", got)
	}
	for _, sid := range []string{"S1", "S2"} {
		stored, mem := e.storedState(sid)
		if !bytes.Equal(stored, mem) {
			t.Fatalf("%s: stored state differs from memory\nstored %s\nmemory %s", sid, stored, mem)
		}
	}
}

// A duplicate of a queued telemetry whose commit then fails must not be
// reported done without error: what it duplicates was lost, and the
// station has to resend it.
func TestSubmitPublishDuplicateOfFailedCommit(t *testing.T) {
	for _, via := range []string{"SubmitPublish", "HandlePublish"} {
		t.Run(via, func(t *testing.T) {
			e := newEnv(t, 4)
			e.online("S1", 4, 0)
			errDisk := errors.New("test: disk trouble")
			var armed sync.Once
			fail := func(string) error {
				var err error
				armed.Do(func() { err = errDisk })
				return err
			}
			failPipelined.Store(&fail)
			t.Cleanup(func() { failPipelined.Store(nil) })

			log := newDoneLog(e.st)
			release := holdCommitter(t, e.st)
			defer release()
			e.submit(log, "S1", "seq2", addBattery(2, 1, "B2")) // fails
			dupErr := make(chan error, 1)
			go func() {
				// The station's resend on a new connection, while the
				// original's commit is still queued.
				p, _ := json.Marshal(addBattery(2, 1, "B2"))
				if via == "HandlePublish" {
					dupErr <- e.b.HandlePublish("S1", wire.KindTelemetry, p)
					return
				}
				var once sync.Once
				ch := make(chan error, 1)
				err := e.b.SubmitPublish("S1", wire.KindTelemetry, p, func(err error) {
					once.Do(func() { ch <- err })
				})
				if err != nil {
					dupErr <- err
					return
				}
				dupErr <- <-ch
			}()
			// Wait until the duplicate waits for the queued commit.
			s, err := e.b.station("S1")
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				s.pmu.Lock()
				waiting := s.drained != nil
				s.pmu.Unlock()
				if waiting {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the duplicate never waited for the queued commit")
				}
				runtime.Gosched()
			}
			release()
			log.wait(t, "seq2")
			select {
			case err = <-dupErr:
			case <-time.After(10 * time.Second):
				t.Fatal("the duplicate was never answered")
			}
			if !errors.Is(err, errResync) {
				t.Fatalf("the duplicate of a lost telemetry was answered %v, want errResync (B2 in the log: %v)", err, e.batteriesAdded("S1"))
			}
			// Its next resend is applied on the reloaded state.
			e.submit(log, "S1", "seq2 again", addBattery(2, 1, "B2"))
			log.wait(t, "seq2 again")
			if err := log.err("seq2 again"); err != nil {
				t.Fatal(err)
			}
			if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"B2"}) {
				t.Fatalf("battery_added %v, want [B2]", got)
			}
		})
	}
}
