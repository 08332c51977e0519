package jslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/swapbridge/swapbridge/cluster/natsnode"
	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/store"
)

// startNode starts a one-node JetStream and returns its client URL.
func startNode(t *testing.T) string {
	t.Helper()
	n, err := natsnode.Start(natsnode.Config{Name: "n1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n.ClientURL()
}

// node is one Log with its own connection and view, as a swapd node has.
type node struct {
	log  *Log
	view *store.Store
	nc   *nats.Conn
}

func openNode(t *testing.T, url, name, viewPath string) *node {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if viewPath == "" {
		viewPath = filepath.Join(t.TempDir(), "view.db")
	}
	view, err := store.Open(viewPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := Open(ctx, Config{Conn: nc, View: view, Node: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return &node{log: l, view: view, nc: nc}
}

// answers collects done callbacks.
type answers struct {
	mu   sync.Mutex
	errs map[int]error
	seq  []int
	ch   chan struct{}
}

func newAnswers() *answers { return &answers{errs: map[int]error{}, ch: make(chan struct{}, 1<<16)} }

func (a *answers) done(i int) func(error) {
	return func(err error) {
		a.mu.Lock()
		a.errs[i] = err
		a.seq = append(a.seq, i)
		a.mu.Unlock()
		a.ch <- struct{}{}
	}
}

func (a *answers) wait(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for range n {
		select {
		case <-a.ch:
		case <-deadline:
			t.Fatalf("fewer than %d answers within 20s", n)
		}
	}
}

func (a *answers) err(i int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.errs[i]
}

func telemetry(sid string, i int, reopen bool) *commitlog.Commit {
	return &commitlog.Commit{
		Station: sid,
		Reopen:  reopen,
		Records: []commitlog.Record{{Kind: commitlog.KindStationState, Key: sid, Value: fmt.Appendf(nil, "state %d", i)}},
		Events:  []commitlog.Event{{Type: "slot_updated", StationID: sid, Fields: fmt.Appendf(nil, `{"i":%d}`, i)}},
	}
}

func appendOne(t *testing.T, l *Log, c *commitlog.Commit) error {
	t.Helper()
	ch := make(chan error, 1)
	if err := l.Append(c, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("no answer within 20s")
		return nil
	}
}

func load(t *testing.T, l *Log, sid string) {
	t.Helper()
	if err := l.Load([]string{sid}, func(commitlog.Reader) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

func TestAppendsAnsweredInOrderAndApplied(t *testing.T) {
	n := openNode(t, startNode(t), "a", "")
	load(t, n.log, "S1")
	const total = 500
	a := newAnswers()
	for i := range total {
		if err := n.log.Append(telemetry("S1", i, i == 0), a.done(i)); err != nil {
			t.Fatal(err)
		}
	}
	a.wait(t, total)
	for i, got := range a.seq {
		if got != i {
			t.Fatalf("answer %d was commit %d: out of order", i, got)
		}
		if err := a.err(i); err != nil {
			t.Fatalf("commit %d: %v", i, err)
		}
	}
	// Read-your-writes: the view holds the last commit once it is answered.
	v, err := n.log.Record(commitlog.KindStationState, "S1")
	if err != nil || string(v) != fmt.Sprintf("state %d", total-1) {
		t.Fatalf("state record = %q, %v", v, err)
	}
	evs, err := n.view.EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != total {
		t.Fatalf("%d events in the view, want %d", len(evs), total)
	}
	groups := map[uint64]int{}
	for i, ev := range evs {
		if want := fmt.Sprintf(`"i":%d`, i); !bytes.Contains(ev.Data, []byte(want)) {
			t.Fatalf("event %d = %s, want %s", i, ev.Data, want)
		}
		if i > 0 && ev.Seq <= evs[i-1].Seq {
			t.Fatalf("seqs not increasing: %d after %d", ev.Seq, evs[i-1].Seq)
		}
		groups[ev.Seq/SeqsPerGroup]++
	}
	if len(groups) >= total {
		t.Errorf("%d groups for %d pipelined commits: none were grouped", len(groups), total)
	}
	t.Logf("%d commits in %d groups", total, len(groups))
}

func TestFailedCommitFencesStation(t *testing.T) {
	n := openNode(t, startNode(t), "a", "")
	load(t, n.log, "S1")
	if err := appendOne(t, n.log, telemetry("S1", 0, true)); err != nil {
		t.Fatal(err)
	}
	bad := telemetry("S1", 1, false)
	bad.Records = append(bad.Records, commitlog.Record{Key: "no kind"})
	if err := appendOne(t, n.log, bad); err == nil {
		t.Fatal("a commit with a record of no kind was accepted")
	}
	if err := appendOne(t, n.log, telemetry("S1", 2, false)); !errors.Is(err, ErrFenced) {
		t.Fatalf("commit after a failed one: %v, want ErrFenced", err)
	}
	// Other stations are not fenced.
	load(t, n.log, "S2")
	if err := appendOne(t, n.log, telemetry("S2", 0, true)); err != nil {
		t.Fatal(err)
	}
	load(t, n.log, "S1")
	if err := appendOne(t, n.log, telemetry("S1", 3, true)); err != nil {
		t.Fatalf("Reopen after reload: %v", err)
	}
	v, _ := n.log.Record(commitlog.KindStationState, "S1")
	if string(v) != "state 3" {
		t.Fatalf("state = %q, want state 3 (the refused ones left nothing)", v)
	}
}

// A node that loaded a station before another wrote for it cannot write
// from that stale load; the stream refuses it.
func TestStaleLoadIsRefused(t *testing.T) {
	url := startNode(t)
	a := openNode(t, url, "a", "")
	b := openNode(t, url, "b", "")
	load(t, a.log, "S1")
	load(t, b.log, "S1") // b's snapshot: nothing of S1
	if err := appendOne(t, a.log, telemetry("S1", 0, true)); err != nil {
		t.Fatal(err)
	}
	err := appendOne(t, b.log, telemetry("S1", 100, true))
	if !errors.Is(err, ErrTakenOver) {
		t.Fatalf("b's Reopen from a stale snapshot: %v, want ErrTakenOver", err)
	}
	// Reloaded, b takes the station over.
	load(t, b.log, "S1")
	if err := appendOne(t, b.log, telemetry("S1", 101, true)); err != nil {
		t.Fatalf("b's takeover after reload: %v", err)
	}
}

// After a takeover, the old owner cannot write, even one whose feed is
// stalled (a paused node that wakes up): the stream refuses it.
func TestTakeoverFencesOldOwner(t *testing.T) {
	url := startNode(t)
	a := openNode(t, url, "a", "")
	b := openNode(t, url, "b", "")
	load(t, a.log, "S1")
	for i := range 3 {
		if err := appendOne(t, a.log, telemetry("S1", i, i == 0)); err != nil {
			t.Fatal(err)
		}
	}
	a.log.cons.Stop() // a sees nothing more: it does not learn of the takeover

	load(t, b.log, "S1")
	if err := appendOne(t, b.log, telemetry("S1", 10, true)); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	err := appendOne(t, a.log, telemetry("S1", 3, false))
	if !errors.Is(err, ErrTakenOver) {
		t.Fatalf("old owner's write after the takeover: %v, want ErrTakenOver", err)
	}
	if err := appendOne(t, a.log, telemetry("S1", 4, false)); !errors.Is(err, ErrFenced) {
		t.Fatalf("old owner's next write: %v, want ErrFenced", err)
	}
	if err := appendOne(t, b.log, telemetry("S1", 11, false)); err != nil {
		t.Fatalf("new owner's write: %v", err)
	}
	v, err := b.log.Record(commitlog.KindStationState, "S1")
	if err != nil || string(v) != "state 11" {
		t.Fatalf("state = %q, %v; want the new owner's", v, err)
	}
}

// An owner with a live feed learns of a takeover from it.
func TestTakeoverSeenInFeed(t *testing.T) {
	url := startNode(t)
	took := make(chan string, 1)
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	view, err := store.Open(filepath.Join(t.TempDir(), "a.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	al, err := Open(context.Background(), Config{Conn: nc, View: view, Node: "a", OnTakeover: func(sid string) { took <- sid }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close() })
	b := openNode(t, url, "b", "")
	load(t, al, "S1")
	if err := appendOne(t, al, telemetry("S1", 0, true)); err != nil {
		t.Fatal(err)
	}
	load(t, b.log, "S1")
	if err := appendOne(t, b.log, telemetry("S1", 1, true)); err != nil {
		t.Fatal(err)
	}
	select {
	case sid := <-took:
		if sid != "S1" {
			t.Fatalf("takeover of %q, want S1", sid)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the old owner did not see the takeover within 20s")
	}
	if err := appendOne(t, al, telemetry("S1", 2, false)); !errors.Is(err, ErrFenced) {
		t.Fatalf("old owner's write after seeing the takeover: %v, want ErrFenced", err)
	}
}

// Every node's view holds the same events under the same seqs; a node
// restarted on its view resumes, a new one catches up from the stream.
func TestViewsAgreeAndResume(t *testing.T) {
	url := startNode(t)
	dir := t.TempDir()
	a := openNode(t, url, "a", filepath.Join(dir, "a.db"))
	b := openNode(t, url, "b", "")
	load(t, a.log, "S1")
	load(t, b.log, "S2")
	ans := newAnswers()
	for i := range 100 {
		if err := a.log.Append(telemetry("S1", i, i == 0), ans.done(i)); err != nil {
			t.Fatal(err)
		}
		if err := b.log.Append(telemetry("S2", i, i == 0), ans.done(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	ans.wait(t, 200)
	notify := &commitlog.Commit{Events: []commitlog.Event{{Type: "notification", UserID: "u1", Fields: []byte(`{"title":"hi"}`)}}}
	if err := appendOne(t, a.log, notify); err != nil {
		t.Fatal(err)
	}
	// Both views at the stream's end.
	last := max(a.log.ackedSeq(), b.log.ackedSeq())
	for _, n := range []*node{a, b} {
		if err := n.log.waitApplied(context.Background(), last); err != nil {
			t.Fatal(err)
		}
	}
	want := seqsOf(t, a.view)
	if got := seqsOf(t, b.view); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("views differ:\na: %v\nb: %v", want, got)
	}
	if len(want) != 201 {
		t.Fatalf("%d events, want 201", len(want))
	}

	// a restarts on its view, c starts from nothing: both agree.
	a.log.Close()
	a.view.Close()
	a2 := openNode(t, url, "a", filepath.Join(dir, "a.db"))
	c := openNode(t, url, "c", "")
	for _, n := range []*node{a2, c} {
		if got := seqsOf(t, n.view); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("view after restart or catch-up differs:\nwant %v\ngot  %v", want, got)
		}
	}
	// The restarted node goes on writing the station after a reload.
	load(t, a2.log, "S1")
	if err := appendOne(t, a2.log, telemetry("S1", 100, true)); err != nil {
		t.Fatal(err)
	}
}

func seqsOf(t *testing.T, v *store.Store) []string {
	t.Helper()
	evs, err := v.EventsAfter(store.Channel{Kind: store.Everything}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = fmt.Sprintf("%d:%s", ev.Seq, ev.Data)
	}
	return out
}
