package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// asyncCalls records the done callbacks of UpdateAsync requests, in the
// order the committer made them.
type asyncCalls struct {
	mu    sync.Mutex
	order []string
	evs   map[string][]Event
	errs  map[string]error
	n     map[string]int
	all   chan struct{} // closed when want callbacks were made
	want  int
	heard func() []uint64 // the commit listener's seqs so far, if set
	early []string        // callbacks that ran before the listener saw their events
}

func newAsyncCalls(want int) *asyncCalls {
	return &asyncCalls{evs: map[string][]Event{}, errs: map[string]error{}, n: map[string]int{}, all: make(chan struct{}), want: want}
}

func (a *asyncCalls) done(name string) func([]Event, error) {
	return func(evs []Event, err error) {
		var heard []uint64
		if a.heard != nil {
			heard = a.heard()
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.order = append(a.order, name)
		a.evs[name], a.errs[name] = evs, err
		a.n[name]++
		for _, ev := range evs {
			found := false
			for _, s := range heard {
				found = found || s == ev.Seq
			}
			if !found {
				a.early = append(a.early, name)
			}
		}
		if len(a.order) == a.want {
			close(a.all)
		}
	}
}

// appendFn appends one station event of type typ and writes a meta record
// named after it; it fails with err (after writing) when err is set.
func appendFn(typ string, err error) func(*Tx) error {
	return func(tx *Tx) error {
		ev := stationEv("a", typ)
		if e := tx.Append(&ev); e != nil {
			return e
		}
		if e := tx.Put(KindMeta, typ, []byte("v")); e != nil {
			return e
		}
		return err
	}
}

// UpdateAsync and Update requests commit in the order they were queued,
// whatever their kind; a failing fn fails only its own request; every done
// is called exactly once, after the commit listener saw its events.
func TestUpdateAsyncOrderWithUpdate(t *testing.T) {
	s := openT(t, "", Options{})
	var lmu sync.Mutex
	var heard []uint64
	s.SetCommitListener(func(evs []Event) {
		lmu.Lock()
		heard = append(heard, seqs(evs)...)
		lmu.Unlock()
	})
	calls := newAsyncCalls(4)
	calls.heard = func() []uint64 {
		lmu.Lock()
		defer lmu.Unlock()
		return append([]uint64(nil), heard...)
	}
	errBoom := errors.New("boom")

	// Everything below queues behind a blocked committer, so it all lands
	// in one batch (and the failing fn makes that batch retry).
	release := blockCommitter(t, s)
	type syncResult struct {
		evs []Event
		err error
	}
	queued := 0
	async := func(name string, err error) {
		t.Helper()
		if e := s.UpdateAsync(appendFn(name, err), calls.done(name)); e != nil {
			t.Fatalf("UpdateAsync %s: %v", name, e)
		}
		queued++
		waitQueued(t, s, queued)
	}
	update := func(name string) chan syncResult {
		t.Helper()
		ch := make(chan syncResult, 1)
		go func() {
			evs, err := s.Update(context.Background(), appendFn(name, nil))
			ch <- syncResult{evs, err}
		}()
		queued++
		waitQueued(t, s, queued)
		return ch
	}
	async("a1", nil)
	u1 := update("u1")
	async("a2", nil)
	async("bad", errBoom)
	u2 := update("u2")
	async("a3", nil)
	release()

	waitChan(t, calls.all, "every UpdateAsync done")
	var r1, r2 syncResult
	for _, x := range []struct {
		ch  chan syncResult
		dst *syncResult
	}{{u1, &r1}, {u2, &r2}} {
		select {
		case *x.dst = <-x.ch:
		case <-time.After(10 * time.Second):
			t.Fatal("Update did not return")
		}
	}
	if r1.err != nil || r2.err != nil || len(r1.evs) != 1 || len(r2.evs) != 1 {
		t.Fatalf("Updates: %+v %+v", r1, r2)
	}

	calls.mu.Lock()
	defer calls.mu.Unlock()
	if fmt.Sprint(calls.order) != "[bad a1 a2 a3]" {
		// The failed fn is answered when it fails, before the retried
		// batch commits; the others in queue order.
		t.Errorf("done order %v, want [bad a1 a2 a3]", calls.order)
	}
	for name, n := range calls.n {
		if n != 1 {
			t.Errorf("done of %s called %d times", name, n)
		}
	}
	if !errors.Is(calls.errs["bad"], errBoom) || calls.evs["bad"] != nil {
		t.Errorf("failing fn: done(%v, %v), want (nil, boom)", calls.evs["bad"], calls.errs["bad"])
	}
	// Queue order a1 u1 a2 (bad) u2 a3 is seq order.
	want := map[string]uint64{"a1": 1, "a2": 3, "a3": 5}
	for name, seq := range want {
		evs := calls.evs[name]
		if calls.errs[name] != nil || len(evs) != 1 || evs[0].Seq != seq || evs[0].Type != name || len(evs[0].Data) == 0 {
			t.Errorf("done of %s: (%+v, %v), want one %s event with seq %d and its frame", name, evs, calls.errs[name], name, seq)
		}
	}
	if r1.evs[0].Seq != 2 || r2.evs[0].Seq != 4 {
		t.Errorf("Update seqs %d, %d; want 2, 4", r1.evs[0].Seq, r2.evs[0].Seq)
	}
	if len(calls.early) > 0 {
		t.Errorf("done ran before the commit listener saw the events of %v", calls.early)
	}

	logged, err := s.EventsAfter(Channel{Kind: Everything}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range logged {
		types = append(types, ev.Type)
	}
	if fmt.Sprint(types) != "[a1 u1 a2 u2 a3]" || !eqSeqs(seqs(logged), 1, 2, 3, 4, 5) {
		t.Fatalf("log %v seqs %v, want [a1 u1 a2 u2 a3] with seqs 1..5", types, seqs(logged))
	}
	err = s.View(func(tx *Tx) error {
		if _, err := tx.Get(KindMeta, "bad"); !errors.Is(err, ErrNotFound) {
			t.Errorf("the failed fn's record: %v, want ErrNotFound", err)
		}
		if _, err := tx.Get(KindMeta, "a3"); err != nil {
			t.Errorf("a3's record: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A stream of UpdateAsync requests from one goroutine, with Updates from
// another in between, commits in queue order across many batches.
func TestUpdateAsyncStreamKeepsOrder(t *testing.T) {
	s := openT(t, "", Options{MaxBatch: 7})
	const n = 300
	got := make(chan uint64, n)
	var failed sync.Once
	for i := range n {
		err := s.UpdateAsync(appendFn(fmt.Sprintf("e%d", i), nil), func(evs []Event, err error) {
			if err != nil || len(evs) != 1 {
				failed.Do(func() { t.Errorf("async %d: %v %v", i, evs, err) })
				got <- 0
				return
			}
			got <- evs[0].Seq
		})
		if err != nil {
			t.Fatal(err)
		}
		if i%50 == 25 {
			if _, err := s.Update(context.Background(), appendFn(fmt.Sprintf("u%d", i), nil)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var prev uint64
	for i := range n {
		select {
		case seq := <-got:
			if seq <= prev {
				t.Fatalf("done %d has seq %d after %d", i, seq, prev)
			}
			prev = seq
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d done", i, n)
		}
	}
	logged, err := s.EventsAfter(Channel{Kind: Everything}, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	next := 0
	for _, ev := range logged {
		if ev.Type[0] == 'u' {
			continue
		}
		if want := fmt.Sprintf("e%d", next); ev.Type != want {
			t.Fatalf("log has %s where %s belongs", ev.Type, want)
		}
		next++
	}
	if next != n {
		t.Fatalf("log has %d async events, want %d", next, n)
	}
}

// Close answers requests still queued with ErrClosed, once each; after
// Close, UpdateAsync refuses and never calls done.
func TestUpdateAsyncClose(t *testing.T) {
	s := openT(t, "", Options{})
	release := blockCommitter(t, s)
	const queued = 3
	calls := newAsyncCalls(queued)
	ran := make(chan string, queued)
	for i := range queued {
		name := fmt.Sprintf("q%d", i)
		fn := func(tx *Tx) error { ran <- name; return appendFn(name, nil)(tx) }
		if err := s.UpdateAsync(fn, calls.done(name)); err != nil {
			t.Fatal(err)
		}
	}
	waitQueued(t, s, queued)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	waitClosing(t, s)
	// Refused while Close waits for the running batch.
	if err := s.UpdateAsync(appendFn("late", nil), calls.done("late")); !errors.Is(err, ErrClosed) {
		t.Fatalf("UpdateAsync during Close: %v, want ErrClosed", err)
	}
	release()
	waitChan(t, calls.all, "done of the queued requests")
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if err := s.UpdateAsync(appendFn("after", nil), calls.done("after")); !errors.Is(err, ErrClosed) {
		t.Fatalf("UpdateAsync after Close: %v, want ErrClosed", err)
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	if len(calls.order) != queued {
		t.Errorf("done calls %v, want one for each of the %d queued requests", calls.order, queued)
	}
	for i := range queued {
		name := fmt.Sprintf("q%d", i)
		if calls.n[name] != 1 || !errors.Is(calls.errs[name], ErrClosed) || calls.evs[name] != nil {
			t.Errorf("%s: done called %d times, last with (%v, %v); want once with (nil, ErrClosed)", name, calls.n[name], calls.evs[name], calls.errs[name])
		}
	}
	select {
	case name := <-ran:
		t.Errorf("the fn of %s ran although the store closed before its batch", name)
	default:
	}
}
