package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/swapbridge/swapbridge/internal/commitlog"
)

// appendWait appends c and waits for its done.
func appendWait(t *testing.T, s *Store, c *commitlog.Commit) error {
	t.Helper()
	ch := make(chan error, 1)
	if err := s.Append(c, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no done within 10s")
		return nil
	}
}

// A commit's records and events are written together; a failed commit of
// a station fences its later ones until one with Reopen; other stations
// and station-less commits are not fenced.
func TestAppendFence(t *testing.T) {
	s := openT(t, filepath.Join(t.TempDir(), "swapd.db"), Options{})
	ok := func(sid, key string) *commitlog.Commit {
		return &commitlog.Commit{Station: sid,
			Records: []commitlog.Record{{Kind: commitlog.KindStationState, Key: key, Value: []byte("v")}},
			Events:  []commitlog.Event{{Type: "t", StationID: sid, Fields: []byte(`{}`)}}}
	}
	if err := appendWait(t, s, ok("S1", "S1")); err != nil {
		t.Fatal(err)
	}
	bad := ok("S1", "S1")
	bad.Records = append(bad.Records, commitlog.Record{Key: "no kind"})
	if err := appendWait(t, s, bad); err == nil {
		t.Fatal("a commit with a record of no kind succeeded")
	}
	if err := appendWait(t, s, ok("S1", "x")); !errors.Is(err, errFenced) {
		t.Fatalf("commit after a failure: %v, want the fence", err)
	}
	if err := appendWait(t, s, ok("S2", "S2")); err != nil {
		t.Fatalf("another station: %v", err)
	}
	if err := appendWait(t, s, &commitlog.Commit{Records: []commitlog.Record{{Kind: commitlog.KindCommand, Key: "c", Value: []byte("1")}}}); err != nil {
		t.Fatalf("a commit of no station: %v", err)
	}
	reopen := ok("S1", "S1")
	reopen.Reopen = true
	if err := appendWait(t, s, reopen); err != nil {
		t.Fatalf("reopening commit: %v", err)
	}
	if _, err := s.Record(commitlog.KindStationState, "x"); !errors.Is(err, commitlog.ErrNotFound) || !errors.Is(err, ErrNotFound) {
		t.Fatalf("the fenced commit's record: %v", err)
	}
	if got := s.LastSeq(); got != 3 {
		t.Fatalf("last seq %d, want 3 (one event per successful station commit)", got)
	}
	// Removing an unknown station fails with ErrNotFound, and nothing of
	// the commit is kept.
	rm := ok("S9", "S9")
	rm.RemoveStation = true
	if err := appendWait(t, s, rm); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("removing an unknown station: %v", err)
	}
	if _, err := s.Record(commitlog.KindStationState, "S9"); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("record of a failed commit: %v", err)
	}
	if err := s.CreateStation(context.Background(), Station{ID: "S9", Slots: 1, SecretHash: [32]byte{1}}); err != nil {
		t.Fatal(err)
	}
	rm.Reopen = true
	if err := appendWait(t, s, rm); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StationInfo("S9"); !errors.Is(err, commitlog.ErrNotFound) {
		t.Fatalf("removed station still in the catalogue: %v", err)
	}
}

// Every group commit is measured: its duration and how many requests it
// held.
func TestCommitMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := openT(t, filepath.Join(t.TempDir(), "swapd.db"), Options{Registerer: reg})
	const n = 20
	done := make(chan error, n)
	for i := range n {
		c := &commitlog.Commit{Records: []commitlog.Record{{Kind: commitlog.KindCommand, Key: string(rune('a' + i)), Value: []byte("1")}}}
		if err := s.Append(c, func(err error) { done <- err }); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hist := map[string]*dto.Histogram{}
	for _, mf := range mfs {
		hist[mf.GetName()] = mf.GetMetric()[0].GetHistogram()
	}
	d, b := hist["swapd_store_commit_duration_seconds"], hist["swapd_store_commit_batch_size"]
	if d == nil || b == nil {
		t.Fatalf("metrics %v", hist)
	}
	if d.GetSampleCount() == 0 || d.GetSampleCount() != b.GetSampleCount() {
		t.Fatalf("%d commits timed, %d batch sizes", d.GetSampleCount(), b.GetSampleCount())
	}
	if b.GetSampleSum() < n {
		t.Fatalf("batch sizes add up to %v, want at least the %d requests", b.GetSampleSum(), n)
	}
}
