package memlog

import (
	"errors"
	"slices"
	"testing"

	"github.com/swapbridge/swapbridge/internal/commitlog"
)

func appendWait(t *testing.T, l *Log, c *commitlog.Commit) error {
	t.Helper()
	ch := make(chan error, 1)
	if err := l.Append(c, func(err error) { ch <- err }); err != nil {
		return err
	}
	return <-ch
}

// Commits are whole or nothing, answered in order, fenced per station
// until Reopen; reads see only what was applied.
func TestLog(t *testing.T) {
	l := New()
	defer l.Close()
	rec := func(k string) commitlog.Record {
		return commitlog.Record{Kind: commitlog.KindBooking, Key: k, Value: []byte(k)}
	}
	ev := commitlog.Event{Type: "t", StationID: "S1", Fields: []byte(`{}`)}
	var order []int
	done := make(chan struct{})
	for i := range 5 {
		c := &commitlog.Commit{Station: "S1", Records: []commitlog.Record{rec("u/" + string(rune('a'+i)))}, Events: []commitlog.Event{ev}}
		if err := l.Append(c, func(err error) {
			if err != nil {
				t.Error(err)
			}
			order = append(order, i) // one committer goroutine: no race
			if i == 4 {
				close(done)
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if !slices.Equal(order, []int{0, 1, 2, 3, 4}) {
		t.Fatalf("answered in order %v", order)
	}
	evs := l.Events(2)
	if len(evs) != 3 || evs[0].Seq != 3 || evs[2].Seq != 5 {
		t.Fatalf("events after 2: %+v", evs)
	}
	bad := &commitlog.Commit{Station: "S1", Records: []commitlog.Record{rec("u/z"), {Key: "no kind"}}}
	if err := appendWait(t, l, bad); err == nil {
		t.Fatal("a commit with a record of no kind was applied")
	}
	if _, err := l.Record(commitlog.KindBooking, "u/z"); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("part of a failed commit was kept: %v", err)
	}
	if err := appendWait(t, l, &commitlog.Commit{Station: "S1", Records: []commitlog.Record{rec("u/y")}}); err == nil {
		t.Fatal("a commit after a failed one of the same station was applied")
	}
	if err := appendWait(t, l, &commitlog.Commit{Station: "S2", Records: []commitlog.Record{rec("v/a")}}); err != nil {
		t.Fatalf("another station was fenced: %v", err)
	}
	if err := appendWait(t, l, &commitlog.Commit{Station: "S1", Reopen: true, Records: []commitlog.Record{rec("u/x")}}); err != nil {
		t.Fatalf("reopening commit: %v", err)
	}
	var keys []string
	_ = l.Records(commitlog.KindBooking, "u/", func(k string, _ []byte) bool { keys = append(keys, k); return true })
	if !slices.Equal(keys, []string{"u/a", "u/b", "u/c", "u/d", "u/e", "u/x"}) {
		t.Fatalf("keys under u/: %v", keys)
	}
	if err := appendWait(t, l, &commitlog.Commit{Station: "S3", RemoveStation: true}); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("removing an unknown station: %v", err)
	}
	l.Close()
	if err := l.Append(&commitlog.Commit{}, func(error) { t.Error("done after Close") }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
}
