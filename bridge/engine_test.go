package bridge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/swapbridge/swapbridge/cluster/jslog"
	"github.com/swapbridge/swapbridge/cluster/natsnode"
	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/internal/memlog"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// The commit engine's tests run against both logs: bbolt (store, a file in
// t.TempDir()) and memory (internal/memlog). Between the bridge and the log
// sits gate, a pass-through that can hold appends (so commits queue up, as
// behind a slow fsync) and make a station's commits fail inside the log
// (by adding a record the log refuses, so the log's own fence applies).

// backend is one log implementation with what the tests need to look at it.
type backend struct {
	name string
	// open returns the log; restart returns it as a new process would find
	// it (bbolt: the file reopened; memory: the same log, as a replicated
	// log outlives a node).
	open    func(t *testing.T) Storage
	restart func(t *testing.T, old Storage) Storage
	// provision adds a station (or user) to the catalogue.
	provision func(t *testing.T, st Storage, info commitlog.StationInfo)
	addUser   func(t *testing.T, st Storage, uid string)
	// events returns the log's events in seq order.
	events func(t *testing.T, st Storage) []loggedEvent
	// seqsSkip: the log's seqs are increasing, not consecutive.
	seqsSkip bool
}

// loggedEvent is an event as read back; JSON holds at least its fields.
type loggedEvent struct {
	Seq               uint64
	Type              string
	StationID, UserID string
	JSON              []byte
}

var backends = []backend{
	{
		name: "bbolt",
		open: func(t *testing.T) Storage {
			st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
		restart: func(t *testing.T, old Storage) Storage {
			path := old.(*store.Store).Path()
			old.(*store.Store).Close()
			st, err := store.Open(path, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
		provision: func(t *testing.T, st Storage, info commitlog.StationInfo) {
			err := st.(*store.Store).CreateStation(context.Background(), store.Station{ID: info.ID, Name: info.Name, Slots: info.Slots, SecretHash: sha256.Sum256([]byte(testSecret))})
			if err != nil {
				t.Fatal(err)
			}
		},
		addUser: func(t *testing.T, st Storage, uid string) {
			if err := st.(*store.Store).CreateUser(context.Background(), store.User{ID: uid, TokenHash: sha256.Sum256([]byte(uid))}); err != nil {
				t.Fatal(err)
			}
		},
		events: func(t *testing.T, st Storage) []loggedEvent {
			evs, err := st.(*store.Store).EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]loggedEvent, len(evs))
			for i, ev := range evs {
				out[i] = loggedEvent{ev.Seq, ev.Type, ev.StationID, ev.UserID, ev.Data}
			}
			return out
		},
	},
	{
		name:     "jetstream",
		seqsSkip: true,
		open: func(t *testing.T) Storage {
			n, err := natsnode.Start(natsnode.Config{Name: "n1", StoreDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(n.Shutdown)
			return openJSLog(t, n.ClientURL(), filepath.Join(t.TempDir(), "view.db"))
		},
		restart: func(t *testing.T, old Storage) Storage {
			l := old.(*jsBackend)
			l.Log.Close()
			path := l.view.Path()
			l.view.Close()
			return openJSLog(t, l.url, path)
		},
		provision: func(t *testing.T, st Storage, info commitlog.StationInfo) {
			err := st.(*jsBackend).view.CreateStation(context.Background(), store.Station{ID: info.ID, Name: info.Name, Slots: info.Slots, SecretHash: sha256.Sum256([]byte(testSecret))})
			if err != nil {
				t.Fatal(err)
			}
		},
		addUser: func(t *testing.T, st Storage, uid string) {
			if err := st.(*jsBackend).view.CreateUser(context.Background(), store.User{ID: uid, TokenHash: sha256.Sum256([]byte(uid))}); err != nil {
				t.Fatal(err)
			}
		},
		events: func(t *testing.T, st Storage) []loggedEvent {
			l := st.(*jsBackend)
			// The view holds what the node's commits made durable.
			if _, err := l.Record(commitlog.KindStationState, ""); err != nil && !errors.Is(err, commitlog.ErrNotFound) {
				t.Fatal(err)
			}
			evs, err := l.view.EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]loggedEvent, len(evs))
			for i, ev := range evs {
				out[i] = loggedEvent{ev.Seq, ev.Type, ev.StationID, ev.UserID, ev.Data}
			}
			return out
		},
	},
	{
		name: "memory",
		open: func(t *testing.T) Storage {
			l := memlog.New()
			t.Cleanup(func() { l.Close() })
			return l
		},
		restart: func(t *testing.T, old Storage) Storage { return old },
		provision: func(t *testing.T, st Storage, info commitlog.StationInfo) {
			st.(*memlog.Log).AddStation(info)
		},
		addUser: func(t *testing.T, st Storage, uid string) { st.(*memlog.Log).AddUser(uid) },
		events: func(t *testing.T, st Storage) []loggedEvent {
			var out []loggedEvent
			for _, ev := range st.(*memlog.Log).Events(0) {
				out = append(out, loggedEvent{ev.Seq, ev.Type, ev.StationID, ev.UserID, ev.Fields})
			}
			return out
		},
	},
}

// jsBackend is a cluster/jslog log on a one-node JetStream, with its view.
type jsBackend struct {
	*jslog.Log
	view *store.Store
	url  string
}

func openJSLog(t *testing.T, url, viewPath string) *jsBackend {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	view, err := store.Open(viewPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	l, err := jslog.Open(context.Background(), jslog.Config{Conn: nc, View: view, Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &jsBackend{Log: l, view: view, url: url}
}

// gate passes a log through, holding appends while closed and failing
// the commits of the stations in fail.
type gate struct {
	Storage
	mu      sync.Mutex
	held    bool
	queue   []func()
	fail    map[string]int // sid → how many of its next commits fail
	failIf  func(c *commitlog.Commit) bool
	appends int           // commits appended while held
	changed chan struct{} // closed on the next held append
}

func (g *gate) Append(c *commitlog.Commit, done func(error)) error {
	g.mu.Lock()
	failIf := g.failIf != nil && g.failIf(c)
	if failIf {
		g.failIf = nil
	}
	if n := g.fail[c.Station]; failIf || (n > 0 && c.Station != "") {
		if !failIf {
			g.fail[c.Station] = n - 1
		}
		// A record the log refuses: the commit fails inside the log.
		bad := *c
		bad.Records = append(slices.Clone(c.Records), commitlog.Record{Key: "refused by the test"})
		c = &bad
	}
	if g.held {
		g.appends++
		if g.changed != nil {
			close(g.changed)
			g.changed = nil
		}
		g.queue = append(g.queue, func() {
			if err := g.Storage.Append(c, done); err != nil {
				done(err)
			}
		})
		g.mu.Unlock()
		return nil
	}
	g.mu.Unlock()
	return g.Storage.Append(c, done)
}

// hold makes appends wait; the returned release forwards them in order.
func (g *gate) hold() (release func()) {
	g.mu.Lock()
	g.held, g.appends = true, 0
	g.mu.Unlock()
	return sync.OnceFunc(func() {
		g.mu.Lock()
		q := g.queue
		g.queue, g.held = nil, false
		g.mu.Unlock()
		for _, f := range q {
			f()
		}
	})
}

func (g *gate) failNext(sid string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.fail == nil {
		g.fail = map[string]int{}
	}
	g.fail[sid] = n
}

// waitHeld waits until n commits were appended while held.
func (g *gate) waitHeld(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		if g.appends >= n {
			g.mu.Unlock()
			return
		}
		if g.changed == nil {
			g.changed = make(chan struct{})
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("%d of %d commits appended within 10s", g.heldAppends(), n)
		}
	}
}

func (g *gate) heldAppends() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.appends
}

// lenv is a bridge on one backend, behind a gate.
type lenv struct {
	t     *testing.T
	be    backend
	st    Storage
	g     *gate
	b     *Bridge
	sink  *sink
	clock *fakeClock
}

func newLenv(t *testing.T, be backend, stations ...string) *lenv {
	t.Helper()
	e := &lenv{t: t, be: be, st: be.open(t), sink: newSink(), clock: &fakeClock{now: time.Now().UTC().Truncate(time.Second)}}
	e.start()
	for _, sid := range stations {
		e.addStation(sid, 4)
	}
	return e
}

func (e *lenv) start() {
	e.t.Helper()
	e.g = &gate{Storage: e.st}
	b, err := New(Config{Clock: e.clock.Now, TickInterval: time.Hour, SnapshotInterval: time.Minute}, e.g, e.sink)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.b = b
	e.t.Cleanup(func() { b.Close() })
}

// restart stops the bridge and starts a new one on the log as a restarted
// process finds it.
func (e *lenv) restart() {
	e.t.Helper()
	e.b.Close()
	e.st = e.be.restart(e.t, e.st)
	e.start()
}

func (e *lenv) addStation(sid string, slots int) {
	e.t.Helper()
	e.be.provision(e.t, e.st, commitlog.StationInfo{ID: sid, Name: sid, Slots: slots})
	if err := e.b.StationProvisioned(context.Background(), sid); err != nil {
		e.t.Fatal(err)
	}
}

// online brings sid online with boot "A" and a full report (seq 1), the
// first ready slots holding ready batteries.
func (e *lenv) online(sid string, slots, ready int) {
	e.t.Helper()
	e.publish(sid, wire.KindStatus, wire.Status{Online: true, BootID: "A", Slots: slots})
	e.publish(sid, wire.KindTelemetry, fullOf("A", 1, slots, ready))
}

func (e *lenv) publish(sid string, kind wire.TopicKind, v any) {
	e.t.Helper()
	p, _ := json.Marshal(v)
	if err := publishWait(e.b, sid, kind, p); err != nil {
		e.t.Fatalf("%s %s: %v", sid, kind, err)
	}
}

// submit hands a telemetry to the bridge as the broker does, recording its
// done in d under name.
func (e *lenv) submit(d *doneLog, sid, name string, tel *wire.Telemetry) {
	e.t.Helper()
	p, err := json.Marshal(tel)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.b.HandlePublish(sid, wire.KindTelemetry, p, d.done(name)); err != nil {
		e.t.Fatalf("HandlePublish %s: %v", name, err)
	}
}

// batteriesAdded lists the battery ids of sid's battery_added events, in
// log order.
func (e *lenv) batteriesAdded(sid string) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.be.events(e.t, e.st) {
		if ev.Type != wire.TypeBatteryAdded || ev.StationID != sid {
			continue
		}
		var f struct {
			BatteryID string `json:"battery_id"`
		}
		if err := json.Unmarshal(ev.JSON, &f); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, f.BatteryID)
	}
	return out
}

// storedState returns the station's state record in the log and its
// in-memory state encoded the same way.
func (e *lenv) storedState(sid string) (stored, mem []byte) {
	e.t.Helper()
	stored, err := e.st.Record(commitlog.KindStationState, sid)
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

// doneLog records done callbacks.
type doneLog struct {
	mu    sync.Mutex
	order []string
	errs  map[string]error
	n     map[string]int
	ch    chan string
}

func newDoneLog() *doneLog {
	return &doneLog{errs: map[string]error{}, n: map[string]int{}, ch: make(chan string, 256)}
}

func (d *doneLog) done(name string) func(error) {
	return func(err error) {
		d.mu.Lock()
		d.order = append(d.order, name)
		d.errs[name] = err
		d.n[name]++
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

// addBattery is telemetry seq of boot "A" putting battery into slot.
func addBattery(seq uint64, slot int, battery string) *wire.Telemetry {
	return telem("A", seq, false, slotOf(slot, battery, 40))
}

// noDone checks that nothing was reported done yet.
func noDone(t *testing.T, d *doneLog, why string) {
	t.Helper()
	select {
	case n := <-d.ch:
		t.Fatalf("done of %s %s", n, why)
	default:
	}
}

// The table: every test runs on both logs.
var engineTests = []struct {
	name string
	run  func(t *testing.T, be backend)
}{
	{"PipelinesInOrder", testPipelinesInOrder},
	{"DuplicateWaitsForQueued", testDuplicateWaitsForQueued},
	{"FailedCommitReloads", testFailedCommitReloads},
	{"DuplicateOfFailedCommit", testDuplicateOfFailedCommit},
	{"BookingThroughOneCommit", testBookingThroughOneCommit},
	{"FailedBookingCommit", testFailedBookingCommit},
	{"RestartKeepsBookingsAndCommands", testRestartKeepsBookingsAndCommands},
	{"TimersQueueEveryStationThenWait", testTimersQueueEveryStationThenWait},
	{"DeleteStation", testDeleteStationOnLog},
	{"Notify", testNotifyOnLog},
}

func TestEngine(t *testing.T) {
	for _, be := range backends {
		for _, tc := range engineTests {
			t.Run(be.name+"/"+tc.name, func(t *testing.T) { tc.run(t, be) })
		}
	}
}

// Telemetries handed over while the log is held are applied in memory at
// once, none is done; once released they are done in order and the log
// holds the last state and every event, in order, also after a restart.
func testPipelinesInOrder(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 0)
	d := newDoneLog()
	release := e.g.hold()
	defer release()
	var names, want []string
	for i := range 6 {
		seq := uint64(i + 2)
		name := fmt.Sprintf("seq%d", seq)
		battery := fmt.Sprintf("B%d", seq)
		// Slots 1..4, then 1 and 2 again with another battery: a swap.
		e.submit(d, "S1", name, addBattery(seq, i%4+1, battery))
		names = append(names, name)
		want = append(want, battery)
	}
	v, err := e.b.StationView("S1")
	if err != nil {
		t.Fatal(err)
	}
	if v.Slots[1].BatteryID == nil || *v.Slots[1].BatteryID != "B7" {
		t.Fatalf("in-memory slot 2 = %v before the commits, want B7", v.Slots[1].BatteryID)
	}
	noDone(t, d, "while its commit is held")
	if n := e.g.heldAppends(); n != 6 {
		t.Fatalf("%d commits queued, want 6 (one per message)", n)
	}
	release()
	d.wait(t, names...)
	d.mu.Lock()
	if !slices.Equal(d.order, names) {
		t.Errorf("done order %v, want %v", d.order, names)
	}
	for _, n := range names {
		if d.errs[n] != nil || d.n[n] != 1 {
			t.Errorf("%s: done called %d times, err %v", n, d.n[n], d.errs[n])
		}
	}
	d.mu.Unlock()
	if got := e.batteriesAdded("S1"); !slices.Equal(got, want) {
		t.Fatalf("battery_added in the log: %v, want %v", got, want)
	}
	stored, mem := e.storedState("S1")
	if !bytes.Equal(stored, mem) {
		t.Fatalf("stored state differs from the in-memory one\nstored %s\nmemory %s", stored, mem)
	}
	var st stationState
	if err := decodeState(stored, &st); err != nil || st.Seq != 7 {
		t.Fatalf("stored state seq %d (%v), want 7", st.Seq, err)
	}
	e.restart()
	stored2, mem2 := e.storedState("S1")
	if !bytes.Equal(stored2, stored) || !bytes.Equal(mem2, stored) {
		t.Fatal("state after a restart differs from the state before")
	}
	// Events have one seq order: no gap (seqs may skip values on a log
	// whose seqs are its groups' positions).
	evs := e.be.events(t, e.st)
	for i, ev := range evs {
		if want := uint64(i + 1); ev.Seq != want && !e.be.seqsSkip {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Fatalf("event %d has seq %d, after %d", i, ev.Seq, evs[i-1].Seq)
		}
	}
}

// A duplicate of queued telemetry is done only once what it duplicates is
// durable, and changes nothing; the reader is not held meanwhile.
func testDuplicateWaitsForQueued(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 0)
	d := newDoneLog()
	release := e.g.hold()
	defer release()
	e.submit(d, "S1", "seq2", addBattery(2, 1, "B2"))
	e.submit(d, "S1", "seq3", addBattery(3, 2, "B3"))
	e.submit(d, "S1", "dup", addBattery(3, 2, "B3")) // returns at once
	noDone(t, d, "while the commits are held")
	release()
	d.wait(t, "seq2", "seq3", "dup")
	d.mu.Lock()
	if !slices.Equal(d.order, []string{"seq2", "seq3", "dup"}) {
		t.Errorf("done order %v", d.order)
	}
	for _, n := range []string{"seq2", "seq3", "dup"} {
		if d.errs[n] != nil || d.n[n] != 1 {
			t.Errorf("%s: done called %d times, err %v", n, d.n[n], d.errs[n])
		}
	}
	d.mu.Unlock()
	if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"B2", "B3"}) {
		t.Fatalf("battery_added %v, want [B2 B3] (the duplicate has no effect)", got)
	}
}

// A failed commit fails the station's later queued commits (the log's
// fence), the station is reloaded from the log on its next use, the
// station's resend applies, and other stations are not affected.
func testFailedCommitReloads(t *testing.T, be backend) {
	e := newLenv(t, be, "S1", "S2")
	e.online("S1", 4, 0)
	e.online("S2", 4, 0)
	stateBefore, _ := e.storedState("S1")
	e.g.failNext("S1", 1)
	d := newDoneLog()
	release := e.g.hold()
	defer release()
	e.submit(d, "S1", "S1-2", addBattery(2, 1, "S1-B2")) // fails
	e.submit(d, "S2", "S2-2", addBattery(2, 1, "S2-B2"))
	e.submit(d, "S1", "S1-3", addBattery(3, 2, "S1-B3")) // derived from the lost one
	e.submit(d, "S1", "S1-4", addBattery(4, 3, "S1-B4"))
	release()
	d.wait(t, "S1-2", "S2-2", "S1-3", "S1-4")
	for _, n := range []string{"S1-2", "S1-3", "S1-4"} {
		if d.err(n) == nil {
			t.Errorf("%s: done(nil) although a commit before it or it failed", n)
		}
	}
	if err := d.err("S2-2"); err != nil {
		t.Fatalf("S2-2, another station: %v", err)
	}
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
	// Nothing was acknowledged: the station resends from seq 2.
	e.submit(d, "S1", "S1-2 again", addBattery(2, 1, "S1-B2"))
	e.submit(d, "S1", "S1-3 again", addBattery(3, 2, "S1-B3"))
	e.submit(d, "S2", "S2-3", addBattery(3, 2, "S2-B3"))
	d.wait(t, "S1-2 again", "S1-3 again", "S2-3")
	for _, n := range []string{"S1-2 again", "S1-3 again", "S2-3"} {
		if err := d.err(n); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
	if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"S1-B2", "S1-B3"}) {
		t.Fatalf("S1 battery_added %v, want [S1-B2 S1-B3]", got)
	}
	if got := e.batteriesAdded("S2"); !slices.Equal(got, []string{"S2-B2", "S2-B3"}) {
		t.Fatalf("S2 battery_added %v, want [S2-B2 S2-B3]", got)
	}
}

// A duplicate of a queued telemetry whose commit then fails is not done
// without error: what it duplicates was lost, and the station must resend.
func testDuplicateOfFailedCommit(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 0)
	e.g.failNext("S1", 1)
	d := newDoneLog()
	release := e.g.hold()
	e.submit(d, "S1", "seq2", addBattery(2, 1, "B2")) // fails
	e.submit(d, "S1", "dup", addBattery(2, 1, "B2"))  // the resend on a new connection
	release()
	d.wait(t, "seq2", "dup")
	if err := d.err("dup"); !errors.Is(err, errResync) {
		t.Fatalf("the duplicate of a lost telemetry was answered %v, want errResync", err)
	}
	e.submit(d, "S1", "seq2 again", addBattery(2, 1, "B2"))
	d.wait(t, "seq2 again")
	if err := d.err("seq2 again"); err != nil {
		t.Fatal(err)
	}
	if got := e.batteriesAdded("S1"); !slices.Equal(got, []string{"B2"}) {
		t.Fatalf("battery_added %v, want [B2]", got)
	}
}

// A booking is one commit (booking, reservation, reserve command, events);
// the reserve is sent only once it is durable; the ack confirms it and the
// telemetry that makes it collected goes through the same engine.
func testBookingThroughOneCommit(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 2)
	ctx := context.Background()
	release := e.g.hold()
	type result struct {
		bk  wire.Booking
		err error
	}
	booked := make(chan result, 1)
	go func() {
		bk, err := e.b.Book(ctx, "u1", "S1")
		booked <- result{bk, err}
	}()
	// Book waits for its commit: no answer, no reserve sent meanwhile.
	e.g.waitHeld(t, 1)
	select {
	case c := <-e.sink.ch:
		t.Fatalf("%s sent before its commit was durable", c.cmd.Action)
	case r := <-booked:
		t.Fatalf("Book answered (%+v) before its commit was durable", r)
	default:
	}
	release()
	r := <-booked
	if r.err != nil || r.bk.Status != wire.BookingStatusPending {
		t.Fatalf("Book: %+v, %v", r.bk, r.err)
	}
	reserve := e.sink.next(t, wire.ActionReserve)
	e.publish("S1", wire.KindAck, wire.Ack{ID: reserve.ID, OK: true})
	got, err := e.b.Booking("u1", r.bk.ID)
	if err != nil || got.Status != wire.BookingStatusReady {
		t.Fatalf("after the ack: %+v, %v (a ready battery: confirmed, then ready)", got, err)
	}
	col, err := e.b.Collect(ctx, "u1", r.bk.ID)
	if err != nil || col.Status != wire.BookingStatusReady {
		t.Fatalf("Collect: %+v, %v", col, err)
	}
	unlock := e.sink.next(t, wire.ActionUnlock)
	e.publish("S1", wire.KindAck, wire.Ack{ID: unlock.ID, OK: true})
	e.publish("S1", wire.KindTelemetry, telem("A", 2, false, slotOf(r.bk.Slot, "", 0)))
	if got, _ := e.b.Booking("u1", r.bk.ID); got.Status != wire.BookingStatusCollected {
		t.Fatalf("after the battery left: %s, want collected", got.Status)
	}
	var types []string
	for _, ev := range e.be.events(t, e.st) {
		if ev.UserID == "u1" || ev.Type == wire.TypeBatteryBooked || ev.Type == wire.TypeBatteryCollected {
			types = append(types, ev.Type)
		}
	}
	want := []string{wire.TypeBatteryBooked, wire.TypeBookingConfirmed, wire.TypeBookingReady, wire.TypeBatteryCollected}
	if !slices.Equal(types, want) {
		t.Fatalf("booking events %v, want %v", types, want)
	}
}

// A booking whose commit fails is refused, leaves no trace in the log,
// gives the user's place back, and the station is reloaded.
func testFailedBookingCommit(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 2)
	ctx := context.Background()
	e.g.failNext("S1", 1)
	if _, err := e.b.Book(ctx, "u1", "S1"); err == nil {
		t.Fatal("Book succeeded although its commit failed")
	}
	v, _ := e.b.StationView("S1")
	if v.BookedBatteries != 0 || v.AvailableBatteries != 2 {
		t.Fatalf("after the failed commit: %d booked, %d available", v.BookedBatteries, v.AvailableBatteries)
	}
	if bks, _ := e.b.UserBookings("u1"); len(bks) != 0 {
		t.Fatalf("bookings after a failed commit: %+v", bks)
	}
	select {
	case c := <-e.sink.ch:
		t.Fatalf("%s sent for a booking that was never stored", c.cmd.Action)
	default:
	}
	// The place was given back: the limit (2) still allows two bookings.
	for range 2 {
		if _, err := e.b.Book(ctx, "u1", "S1"); err != nil {
			t.Fatal(err)
		}
	}
}

// Bookings, their deadlines and pending commands survive a restart; the
// pending reserve is resent and its ack still confirms.
func testRestartKeepsBookingsAndCommands(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 2)
	bk, err := e.b.Book(context.Background(), "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	first := e.sink.next(t, wire.ActionReserve)
	e.restart()
	e.b.StationConnected("S1")
	e.b.tick(e.clock.Now())
	again := e.sink.next(t, wire.ActionReserve)
	if again.ID != first.ID {
		t.Fatalf("resent %s, want the same command %s", again.ID, first.ID)
	}
	e.publish("S1", wire.KindAck, wire.Ack{ID: again.ID, OK: true})
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusReady {
		t.Fatalf("after the restart and the ack: %s", got.Status)
	}
	v, _ := e.b.StationView("S1")
	if v.BookedBatteries != 1 {
		t.Fatalf("booked %d after the restart", v.BookedBatteries)
	}
}

// The timer loop queues every station's commit before it waits for any:
// with the log held, all of them are appended.
func testTimersQueueEveryStationThenWait(t *testing.T, be backend) {
	const n = 5
	e := newLenv(t, be)
	var ids []string
	for i := range n {
		sid := fmt.Sprintf("T%d", i)
		e.addStation(sid, 2)
		e.online(sid, 2, 1)
		ids = append(ids, sid)
	}
	e.b.tick(e.clock.Now()) // the first tick looks at every station
	// Silent for 3× the snapshot interval: every station goes offline.
	now := e.clock.Advance(4 * time.Minute)
	release := e.g.hold()
	ticked := make(chan struct{})
	go func() {
		e.b.tick(now)
		close(ticked)
	}()
	e.g.waitHeld(t, n)
	select {
	case <-ticked:
		t.Fatal("the tick returned before its commits were durable")
	default:
	}
	release()
	<-ticked
	for _, sid := range ids {
		if v, _ := e.b.StationView(sid); v.Online {
			t.Fatalf("%s still online after the tick", sid)
		}
	}
}

// DeleteStation: one commit fails the bookings, removes the records and
// the catalogue entry; a failed one changes nothing.
func testDeleteStationOnLog(t *testing.T, be backend) {
	e := newLenv(t, be, "S1")
	e.online("S1", 4, 2)
	ctx := context.Background()
	bk, err := e.b.Book(ctx, "u1", "S1")
	if err != nil {
		t.Fatal(err)
	}
	e.sink.next(t, wire.ActionReserve)
	e.g.mu.Lock()
	e.g.failIf = func(c *commitlog.Commit) bool { return c.RemoveStation }
	e.g.mu.Unlock()
	if err := e.b.DeleteStation(ctx, "S1"); err == nil {
		t.Fatal("DeleteStation succeeded although its commit failed")
	}
	if !e.b.StationExists("S1") {
		t.Fatal("station gone after a failed delete")
	}
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusPending {
		t.Fatalf("booking %s after a failed delete", got.Status)
	}
	if err := e.b.DeleteStation(ctx, "S1"); err != nil {
		t.Fatal(err)
	}
	if e.b.StationExists("S1") {
		t.Fatal("station still there")
	}
	if got, _ := e.b.Booking("u1", bk.ID); got.Status != wire.BookingStatusFailed {
		t.Fatalf("booking %s after the delete, want failed", got.Status)
	}
	for _, k := range []commitlog.Kind{commitlog.KindStationState, commitlog.KindCommand} {
		_ = e.st.Records(k, "", func(key string, v []byte) bool {
			if k == commitlog.KindStationState || bytes.Contains(v, []byte(`"sid":"S1"`)) {
				t.Errorf("%s record %s left after the delete", k, key)
			}
			return true
		})
	}
	if _, err := e.st.StationInfo("S1"); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("catalogue after the delete: %v", err)
	}
	if err := publishWait(e.b, "S1", wire.KindTelemetry, []byte(`{}`)); !errors.Is(err, ErrStationNotFound) {
		t.Fatalf("publish after the delete: %v", err)
	}
}

// A notification is one commit of no station, on the user's channel.
func testNotifyOnLog(t *testing.T, be backend) {
	e := newLenv(t, be)
	be.addUser(t, e.st, "u9")
	if err := e.b.Notify(context.Background(), "u9", wire.Notification{Title: "hi"}); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Notify(context.Background(), "nobody", wire.Notification{Title: "hi"}); !errors.Is(err, ErrUserNotFound) {
		t.Fatalf("unknown user: %v", err)
	}
	evs := e.be.events(t, e.st)
	if len(evs) != 1 || evs[0].UserID != "u9" || evs[0].Type != wire.TypeNotification {
		t.Fatalf("events %+v", evs)
	}
}
