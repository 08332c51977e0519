package store

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/swapbridge/swapbridge/internal/testwait"
)

func openT(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "swapd.db")
	}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func stationEv(sid, typ string) Event {
	return Event{Type: typ, StationID: sid, Fields: []byte(fmt.Sprintf(`{"station_id":%q}`, sid))}
}

func userEv(uid string) Event {
	return Event{Type: "notification", UserID: uid, Fields: []byte(`{"title":"t","message":"m","level":"info"}`)}
}

// appendAll appends evs in one Update and returns them with seqs.
func appendAll(t testing.TB, s *Store, evs ...Event) []Event {
	t.Helper()
	out, err := s.Update(context.Background(), func(tx *Tx) error {
		for i := range evs {
			ev := evs[i]
			if err := tx.Append(&ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if len(out) != len(evs) {
		t.Fatalf("Update returned %d events, want %d", len(out), len(evs))
	}
	return out
}

func seqs(evs []Event) []uint64 {
	out := make([]uint64, len(evs))
	for i, ev := range evs {
		out[i] = ev.Seq
	}
	return out
}

func eqSeqs(a []uint64, b ...uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// blockCommitter occupies the committer with an Update whose fn waits until
// release is called, so that later Updates queue up and share one batch.
func blockCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, gate := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := s.Update(context.Background(), func(*Tx) error {
			close(started)
			<-gate
			return nil
		})
		done <- err
	}()
	waitChan(t, started, "blocking fn to start")
	var once sync.Once
	return func() {
		once.Do(func() {
			close(gate)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("blocking Update: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("blocking Update did not return")
			}
		})
	}
}

func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	testwait.Recv(t, ch, testwait.Timeout, what)
}

// waitQueued waits until n Updates are queued behind the committer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	testwait.For(t, testwait.Timeout, fmt.Sprintf("%d updates queued", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.queue) >= n
	})
}

func TestSeqMonotonicAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d", "swapd.db") // directory is created
	s := openT(t, path, Options{Retention: Retention{MaxAge: time.Hour, MaxEvents: -1}})
	got := appendAll(t, s, stationEv("st-1", "inventory_update"), userEv("u1"), stationEv("st-2", "station_status"))
	if !eqSeqs(seqs(got), 1, 2, 3) {
		t.Fatalf("seqs %v, want 1 2 3", seqs(got))
	}
	if s.LastSeq() != 3 || s.FirstSeq() != 1 {
		t.Fatalf("LastSeq %d FirstSeq %d, want 3 1", s.LastSeq(), s.FirstSeq())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path, Options{Retention: Retention{MaxAge: time.Hour, MaxEvents: -1}})
	if s.LastSeq() != 3 || s.FirstSeq() != 1 {
		t.Fatalf("after reopen LastSeq %d FirstSeq %d, want 3 1", s.LastSeq(), s.FirstSeq())
	}
	back, err := s.EventsAfter(Channel{Kind: Everything}, 0, 0)
	if err != nil || len(back) != 3 {
		t.Fatalf("after reopen: %d events, %v", len(back), err)
	}
	for i := range back {
		if string(back[i].Data) != string(got[i].Data) || back[i].UserID != got[i].UserID {
			t.Fatalf("event %d after reopen: %+v, appended %+v", i+1, back[i], got[i])
		}
	}
	// Old events: retention removes the whole log, the counter stays.
	old := stationEv("st-1", "inventory_update")
	old.Time = time.Now().Add(-2 * time.Hour)
	got = appendAll(t, s, old, old)
	if !eqSeqs(seqs(got), 4, 5) {
		t.Fatalf("seqs %v, want 4 5", seqs(got))
	}
	n, err := s.Compact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Events 1-3 are recent, so age removes nothing before them: prefix only.
	if n != 0 {
		t.Fatalf("Compact removed %d, want 0 (recent events lead the log)", n)
	}
	s.Close()

	s = openT(t, path, Options{Retention: Retention{MaxAge: -1, MaxEvents: 1}})
	if n, err := s.Compact(context.Background()); err != nil || n != 4 {
		t.Fatalf("Compact = %d, %v; want 4 removed", n, err)
	}
	s.Close()
	s = openT(t, path, Options{Retention: Retention{MaxAge: -1, MaxEvents: 1}})
	if s.LastSeq() != 5 || s.FirstSeq() != 5 {
		t.Fatalf("after compaction and reopen LastSeq %d FirstSeq %d, want 5 5", s.LastSeq(), s.FirstSeq())
	}
	got = appendAll(t, s, stationEv("st-1", "inventory_update"))
	if got[0].Seq != 6 {
		t.Fatalf("seq after reopen %d, want 6", got[0].Seq)
	}
}

func TestSeqSurvivesFullCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swapd.db")
	opts := Options{Retention: Retention{MaxAge: time.Minute, MaxEvents: -1}}
	s := openT(t, path, opts)
	old := stationEv("st-1", "inventory_update")
	old.Time = time.Now().Add(-time.Hour)
	appendAll(t, s, old, old, old)
	if n, err := s.Compact(context.Background()); err != nil || n != 3 {
		t.Fatalf("Compact = %d, %v; want 3", n, err)
	}
	if s.FirstSeq() != 4 || s.LastSeq() != 3 {
		t.Fatalf("FirstSeq %d LastSeq %d, want 4 3", s.FirstSeq(), s.LastSeq())
	}
	if _, err := s.EventsAfter(Channel{Kind: Everything}, 2, 0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("EventsAfter(2) err %v, want ErrCompacted", err)
	}
	if evs, err := s.EventsAfter(Channel{Kind: Everything}, 3, 0); err != nil || len(evs) != 0 {
		t.Fatalf("EventsAfter(3) = %d events, %v; want none", len(evs), err)
	}
	s.Close()
	s = openT(t, path, opts)
	if s.FirstSeq() != 4 || s.LastSeq() != 3 {
		t.Fatalf("after reopen FirstSeq %d LastSeq %d, want 4 3", s.FirstSeq(), s.LastSeq())
	}
	got := appendAll(t, s, stationEv("st-1", "inventory_update"))
	if got[0].Seq != 4 || s.FirstSeq() != 4 {
		t.Fatalf("new seq %d FirstSeq %d, want 4 4", got[0].Seq, s.FirstSeq())
	}
}

func TestEventsAfterByChannel(t *testing.T) {
	s := openT(t, "", Options{})
	all := appendAll(t, s,
		stationEv("a", "inventory_update"), // 1
		stationEv("b", "inventory_update"), // 2
		userEv("u1"),                       // 3
		stationEv("a", "battery_added"),    // 4
		userEv("u2"),                       // 5
		stationEv("ab", "station_status"),  // 6: prefix of nothing, shares "a"
		stationEv("a", "station_status"),   // 7
		userEv("u1"),                       // 8
		Event{Type: "booking_ready", StationID: "a", UserID: "u1", Fields: []byte(`{"booking_id":"bk"}`)}, // 9: user channel only
	)
	if !eqSeqs(seqs(all), 1, 2, 3, 4, 5, 6, 7, 8, 9) {
		t.Fatalf("seqs %v", seqs(all))
	}
	tests := []struct {
		ch    Channel
		since uint64
		limit int
		want  []uint64
	}{
		{Channel{Kind: OneStation, ID: "a"}, 0, 0, []uint64{1, 4, 7}},
		{Channel{Kind: OneStation, ID: "a"}, 1, 0, []uint64{4, 7}},
		{Channel{Kind: OneStation, ID: "a"}, 4, 0, []uint64{7}},
		{Channel{Kind: OneStation, ID: "a"}, 0, 2, []uint64{1, 4}},
		{Channel{Kind: OneStation, ID: "ab"}, 0, 0, []uint64{6}},
		{Channel{Kind: OneStation, ID: "b"}, 2, 0, []uint64{}},
		{Channel{Kind: OneStation, ID: "zz"}, 0, 0, []uint64{}},
		{Channel{Kind: OneUser, ID: "u1"}, 0, 0, []uint64{3, 8, 9}},
		{Channel{Kind: OneUser, ID: "u1"}, 3, 0, []uint64{8, 9}},
		{Channel{Kind: OneUser, ID: "u2"}, 0, 0, []uint64{5}},
		{Channel{Kind: AllStations}, 0, 0, []uint64{1, 2, 4, 6, 7}},
		{Channel{Kind: AllStations}, 2, 2, []uint64{4, 6}},
		{Channel{Kind: Everything}, 5, 0, []uint64{6, 7, 8, 9}},
		{Channel{Kind: Everything}, 9, 0, []uint64{}},
		{Channel{Kind: Everything}, 100, 0, []uint64{}}, // beyond the log: empty, no error
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%d/%s/since=%d/limit=%d", tc.ch.Kind, tc.ch.ID, tc.since, tc.limit), func(t *testing.T) {
			evs, err := s.EventsAfter(tc.ch, tc.since, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if !eqSeqs(seqs(evs), tc.want...) {
				t.Fatalf("seqs %v, want %v", seqs(evs), tc.want)
			}
			for _, ev := range evs {
				if !tc.ch.Matches(&ev) {
					t.Errorf("event %d (%s/%s) does not match channel", ev.Seq, ev.StationID, ev.UserID)
				}
				want := all[ev.Seq-1]
				if string(ev.Data) != string(want.Data) || ev.Type != want.Type || !ev.Time.Equal(want.Time) ||
					ev.StationID != want.StationID || ev.UserID != want.UserID {
					t.Errorf("event %d read back as %+v, appended %+v", ev.Seq, ev, want)
				}
			}
		})
	}
	if _, err := s.EventsAfter(Channel{Kind: OneStation, ID: "a\x00b"}, 0, 0); err == nil {
		t.Error("EventsAfter accepted an invalid station id")
	}
}

func TestEventData(t *testing.T) {
	s := openT(t, "", Options{})
	ts := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("X", 3600))
	got := appendAll(t, s, Event{Type: "battery_added", StationID: "st-1", Time: ts,
		Fields: []byte(`{"station_id":"st-1","slot":3,"battery_id":"B-1","soc":55.5}`)})
	var m map[string]any
	if err := json.Unmarshal(got[0].Data, &m); err != nil {
		t.Fatalf("Data %s: %v", got[0].Data, err)
	}
	if m["type"] != "battery_added" || m["seq"] != 1.0 || m["ts"] != "2026-03-01T11:00:00.123456789Z" ||
		m["slot"] != 3.0 || m["battery_id"] != "B-1" || m["station_id"] != "st-1" {
		t.Fatalf("Data %s", got[0].Data)
	}
	if !got[0].Time.Equal(ts) || got[0].Time.Location() != time.UTC {
		t.Fatalf("Time %v, want %v in UTC", got[0].Time, ts)
	}
	// Empty fields make a frame without extra members.
	got = appendAll(t, s, Event{Type: "station_status", StationID: "st-1", Time: ts})
	if want := `{"type":"station_status","seq":2,"ts":"2026-03-01T11:00:00.123456789Z"}`; string(got[0].Data) != want {
		t.Fatalf("Data %s, want %s", got[0].Data, want)
	}
	for _, bad := range []Event{
		{Type: "", StationID: "st-1"},
		{Type: "x", StationID: "bad id"},
		{Type: "x", UserID: "-u"},
		{Type: "x", StationID: "st-1", Fields: []byte(`[1]`)},
		{Type: strings.Repeat("x", 256), StationID: "st-1"},
	} {
		if _, err := s.Update(context.Background(), func(tx *Tx) error { return tx.Append(&bad) }); err == nil {
			t.Errorf("Append(%+v) succeeded", bad)
		}
	}
	if s.LastSeq() != 2 {
		t.Fatalf("LastSeq %d after rejected appends, want 2", s.LastSeq())
	}
}

// TestIndexReadsSkipOtherChannels corrupts another station's record: reads
// through the index never touch it, a full-log read does and reports it.
func TestIndexReadsSkipOtherChannels(t *testing.T) {
	s := openT(t, "", Options{})
	appendAll(t, s, stationEv("a", "inventory_update"), stationEv("b", "inventory_update"), userEv("u"), stationEv("a", "inventory_update"))
	if err := s.db.Update(func(btx *bolt.Tx) error {
		return btx.Bucket(bucketEvents).Put([]byte{0, 0, 0, 0, 0, 0, 0, 2}, []byte("garbage"))
	}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.EventsAfter(Channel{Kind: OneStation, ID: "a"}, 0, 0); err != nil || !eqSeqs(seqs(evs), 1, 4) {
		t.Fatalf("station a: %v, %v", seqs(evs), err)
	}
	if evs, err := s.EventsAfter(Channel{Kind: OneUser, ID: "u"}, 0, 0); err != nil || !eqSeqs(seqs(evs), 3) {
		t.Fatalf("user u: %v, %v", seqs(evs), err)
	}
	if _, err := s.EventsAfter(Channel{Kind: AllStations}, 0, 0); !errors.Is(err, errCorrupt) {
		t.Fatalf("full read err %v, want corrupt record", err)
	}
}

func TestChannelMatches(t *testing.T) {
	st := &Event{StationID: "a"}
	us := &Event{UserID: "u"}
	both := &Event{StationID: "a", UserID: "u"}
	none := &Event{}
	tests := []struct {
		ch   Channel
		ev   *Event
		want bool
	}{
		{Channel{Kind: AllStations}, st, true},
		{Channel{Kind: AllStations}, us, false},
		{Channel{Kind: AllStations}, both, false},
		{Channel{Kind: AllStations}, none, false},
		{Channel{Kind: OneStation, ID: "a"}, st, true},
		{Channel{Kind: OneStation, ID: "b"}, st, false},
		{Channel{Kind: OneStation, ID: "a"}, both, false},
		{Channel{Kind: OneUser, ID: "u"}, us, true},
		{Channel{Kind: OneUser, ID: "u"}, both, true},
		{Channel{Kind: OneUser, ID: "v"}, us, false},
		{Channel{Kind: OneUser, ID: "u"}, st, false},
		{Channel{Kind: Everything}, none, true},
		{Channel{Kind: 99}, st, false},
	}
	for i, tc := range tests {
		if got := tc.ch.Matches(tc.ev); got != tc.want {
			t.Errorf("%d: %+v.Matches(%+v) = %v, want %v", i, tc.ch, tc.ev, got, tc.want)
		}
	}
}

func countKeys(t *testing.T, s *Store, bucket []byte) int {
	t.Helper()
	n := 0
	if err := s.db.View(func(btx *bolt.Tx) error {
		return btx.Bucket(bucket).ForEach(func(_, _ []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRetentionByCount(t *testing.T) {
	s := openT(t, "", Options{Retention: Retention{MaxAge: -1, MaxEvents: 5}})
	var evs []Event
	for i := range 12 {
		if i%3 == 2 {
			evs = append(evs, userEv("u"))
		} else {
			evs = append(evs, stationEv("a", "inventory_update"))
		}
	}
	appendAll(t, s, evs...)
	n, err := s.Compact(context.Background())
	if err != nil || n != 7 {
		t.Fatalf("Compact = %d, %v; want 7", n, err)
	}
	if s.FirstSeq() != 8 || s.LastSeq() != 12 {
		t.Fatalf("FirstSeq %d LastSeq %d, want 8 12", s.FirstSeq(), s.LastSeq())
	}
	for _, since := range []uint64{0, 6} {
		if _, err := s.EventsAfter(Channel{Kind: OneStation, ID: "a"}, since, 0); !errors.Is(err, ErrCompacted) {
			t.Errorf("EventsAfter(%d) err %v, want ErrCompacted", since, err)
		}
	}
	got, err := s.EventsAfter(Channel{Kind: Everything}, 7, 0)
	if err != nil || !eqSeqs(seqs(got), 8, 9, 10, 11, 12) {
		t.Fatalf("EventsAfter(7) = %v, %v", seqs(got), err)
	}
	got, err = s.EventsAfter(Channel{Kind: OneUser, ID: "u"}, 7, 0)
	if err != nil || !eqSeqs(seqs(got), 9, 12) {
		t.Fatalf("user after 7 = %v, %v", seqs(got), err)
	}
	if a, u := countKeys(t, s, bucketIdxStation), countKeys(t, s, bucketIdxUser); a != 3 || u != 2 {
		t.Fatalf("index entries station %d user %d, want 3 2", a, u)
	}
	if n, err := s.Compact(context.Background()); err != nil || n != 0 {
		t.Fatalf("second Compact = %d, %v; want 0", n, err)
	}
}

func TestRetentionByAge(t *testing.T) {
	s := openT(t, "", Options{Retention: Retention{MaxAge: time.Hour, MaxEvents: -1}})
	old, fresh := stationEv("a", "inventory_update"), stationEv("a", "inventory_update")
	old.Time = time.Now().Add(-3 * time.Hour)
	oldUser := userEv("u")
	oldUser.Time = old.Time
	// 1-4 old, 5 fresh, 6 old again (behind a fresh one: kept, retention
	// removes a prefix), 7 fresh.
	appendAll(t, s, old, oldUser, old, oldUser, fresh, old, fresh)
	n, err := s.Compact(context.Background())
	if err != nil || n != 4 {
		t.Fatalf("Compact = %d, %v; want 4", n, err)
	}
	if s.FirstSeq() != 5 {
		t.Fatalf("FirstSeq %d, want 5", s.FirstSeq())
	}
	if _, err := s.EventsAfter(Channel{Kind: OneUser, ID: "u"}, 3, 0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("EventsAfter(3) err %v, want ErrCompacted", err)
	}
	got, err := s.EventsAfter(Channel{Kind: OneStation, ID: "a"}, 4, 0)
	if err != nil || !eqSeqs(seqs(got), 5, 6, 7) {
		t.Fatalf("EventsAfter(4) = %v, %v", seqs(got), err)
	}
	if u := countKeys(t, s, bucketIdxUser); u != 0 {
		t.Fatalf("%d user index entries left, want 0", u)
	}
}

func TestRetentionInChunks(t *testing.T) {
	s := openT(t, "", Options{Retention: Retention{MaxAge: -1, MaxEvents: 100}})
	const total = 2*compactChunk + 500
	evs := make([]Event, total)
	for i := range evs {
		evs[i] = stationEv(fmt.Sprintf("s%d", i%7), "inventory_update")
	}
	appendAll(t, s, evs...)
	n, err := s.Compact(context.Background())
	if err != nil || n != total-100 {
		t.Fatalf("Compact = %d, %v; want %d", n, err, total-100)
	}
	if s.FirstSeq() != total-99 {
		t.Fatalf("FirstSeq %d, want %d", s.FirstSeq(), total-99)
	}
	if k := countKeys(t, s, bucketIdxStation); k != 100 {
		t.Fatalf("%d station index entries, want 100", k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Compact(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Compact with cancelled ctx: %v", err)
	}
}

func TestBackgroundRetention(t *testing.T) {
	s := openT(t, "", Options{Retention: Retention{MaxAge: -1, MaxEvents: 2}, CompactEvery: time.Millisecond})
	appendAll(t, s, stationEv("a", "x"), stationEv("a", "x"), stationEv("a", "x"), stationEv("a", "x"))
	if !testwait.Until(testwait.Timeout, func() bool { return s.FirstSeq() == 3 }) {
		t.Fatalf("FirstSeq %d, want 3 after background compaction", s.FirstSeq())
	}
}

func TestGroupCommitConcurrentWriters(t *testing.T) {
	s := openT(t, "", Options{})
	var (
		mu       sync.Mutex
		heard    []uint64
		commits  int
		badOrder bool
	)
	s.SetCommitListener(func(evs []Event) {
		mu.Lock()
		defer mu.Unlock()
		commits++
		for _, ev := range evs {
			if len(heard) > 0 && ev.Seq != heard[len(heard)-1]+1 {
				badOrder = true
			}
			heard = append(heard, ev.Seq)
		}
	})
	const writers, perWriter = 100, 10
	var wg sync.WaitGroup
	got := make([][]uint64, writers)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			sid := fmt.Sprintf("st-%d", w)
			for range perWriter {
				evs, err := s.Update(context.Background(), func(tx *Tx) error {
					ev := stationEv(sid, "inventory_update")
					return tx.Append(&ev)
				})
				if err != nil {
					errs <- err
					return
				}
				got[w] = append(got[w], evs[0].Seq)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	const total = writers * perWriter
	seen := make([]bool, total+1)
	for w, ss := range got {
		for i, q := range ss {
			if q == 0 || q > total || seen[q] {
				t.Fatalf("writer %d got seq %d (duplicate or out of range)", w, q)
			}
			seen[q] = true
			if i > 0 && q <= ss[i-1] {
				t.Fatalf("writer %d: seq %d after %d", w, q, ss[i-1])
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(heard) != total || badOrder || heard[0] != 1 {
		t.Fatalf("listener heard %d events (in order: %v), want %d from seq 1", len(heard), !badOrder, total)
	}
	if s.LastSeq() != total {
		t.Fatalf("LastSeq %d, want %d", s.LastSeq(), total)
	}
	all, err := s.EventsAfter(Channel{Kind: AllStations}, 0, 0)
	if err != nil || len(all) != total {
		t.Fatalf("log has %d events (%v), want %d", len(all), err, total)
	}
	for w := range writers {
		evs, err := s.EventsAfter(Channel{Kind: OneStation, ID: fmt.Sprintf("st-%d", w)}, 0, 0)
		if err != nil || !eqSeqs(seqs(evs), got[w]...) {
			t.Fatalf("station %d: %v, %v; want %v", w, seqs(evs), err, got[w])
		}
	}
	t.Logf("%d updates in %d commits", total, commits)
}

func TestGroupCommitSharesOneCommit(t *testing.T) {
	s := openT(t, "", Options{})
	var calls [][]uint64
	var mu sync.Mutex
	s.SetCommitListener(func(evs []Event) {
		mu.Lock()
		calls = append(calls, seqs(evs))
		mu.Unlock()
	})
	release := blockCommitter(t, s)
	const n = 10
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.Update(context.Background(), func(tx *Tx) error {
				ev := stationEv("a", "x")
				return tx.Append(&ev)
			}); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(t, s, n)
	release()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 1 || !eqSeqs(calls[0], 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) {
		t.Fatalf("listener calls %v, want one with seqs 1..10", calls)
	}
}

func TestFailingFnDoesNotSinkBatch(t *testing.T) {
	s := openT(t, "", Options{})
	var heard []uint64
	var mu sync.Mutex
	s.SetCommitListener(func(evs []Event) {
		mu.Lock()
		heard = append(heard, seqs(evs)...)
		mu.Unlock()
	})
	release := blockCommitter(t, s)
	errBoom := errors.New("boom")
	type result struct {
		i   int
		evs []Event
		err error
	}
	results := make(chan result, 6)
	for i := range 6 {
		go func() {
			evs, err := s.Update(context.Background(), func(tx *Tx) error {
				ev := stationEv("a", "x")
				if err := tx.Append(&ev); err != nil {
					return err
				}
				if err := tx.Put(KindMeta, fmt.Sprintf("k%d", i), []byte("v")); err != nil {
					return err
				}
				switch i {
				case 2:
					return errBoom
				case 4:
					panic("kaboom")
				}
				return nil
			})
			results <- result{i, evs, err}
		}()
		waitQueued(t, s, i+1) // keep the queue order fixed
	}
	release()
	var got []uint64
	for range 6 {
		r := <-results
		switch r.i {
		case 2:
			if !errors.Is(r.err, errBoom) || r.evs != nil {
				t.Errorf("failing fn: %v, %v", r.evs, r.err)
			}
		case 4:
			if r.err == nil || !strings.Contains(r.err.Error(), "kaboom") {
				t.Errorf("panicking fn: err %v", r.err)
			}
		default:
			if r.err != nil || len(r.evs) != 1 {
				t.Errorf("fn %d: %v, %v", r.i, r.evs, r.err)
				continue
			}
			got = append(got, r.evs[0].Seq)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !eqSeqs(heard, 1, 2, 3, 4) {
		t.Fatalf("listener heard %v, want 1..4 (no holes from the failed fns)", heard)
	}
	if len(got) != 4 || s.LastSeq() != 4 {
		t.Fatalf("successful seqs %v, LastSeq %d", got, s.LastSeq())
	}
	err := s.View(func(tx *Tx) error {
		for i := range 6 {
			_, err := tx.Get(KindMeta, fmt.Sprintf("k%d", i))
			if failed := i == 2 || i == 4; failed != errors.Is(err, ErrNotFound) {
				t.Errorf("record k%d: %v", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestUpdateContext(t *testing.T) {
	s := openT(t, "", Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	if _, err := s.Update(ctx, func(*Tx) error { ran = true; return nil }); !errors.Is(err, context.Canceled) || ran {
		t.Fatalf("Update with done ctx: err %v ran %v", err, ran)
	}

	// Cancelled while queued: the fn never runs.
	release := blockCommitter(t, s)
	defer release()
	ctx, cancel = context.WithCancel(context.Background())
	ranCh := make(chan struct{}, 1)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Update(ctx, func(*Tx) error { ranCh <- struct{}{}; return nil })
		errc <- err
	}()
	waitQueued(t, s, 1)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("queued Update err %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancelled Update did not return while the committer was busy")
	}
	release()
	// A later Update commits; the withdrawn fn still has not run.
	if _, err := s.Update(context.Background(), func(*Tx) error { return nil }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ranCh:
		t.Fatal("withdrawn fn ran")
	default:
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swapd.db")
	openT(t, path, Options{})
	s2, err := Open(path, Options{OpenTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
		t.Fatalf("second Open: %v; want ErrLocked naming %s", err, path)
	}
}

func TestClose(t *testing.T) {
	s := openT(t, "", Options{})
	release := blockCommitter(t, s)
	queued := make(chan error, 1)
	go func() {
		_, err := s.Update(context.Background(), func(*Tx) error { return nil })
		queued <- err
	}()
	waitQueued(t, s, 1)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	// Close marks the store closed, then waits for the running batch.
	waitClosing(t, s)
	release()
	if err := <-queued; !errors.Is(err, ErrClosed) {
		t.Fatalf("pending Update err %v, want ErrClosed", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Update(context.Background(), func(*Tx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Update after Close: %v", err)
	}
	if _, err := s.EventsAfter(Channel{Kind: Everything}, 0, 0); err != nil {
		t.Fatalf("EventsAfter on empty closed log: %v", err) // LastSeq 0 answers without the file
	}
	if _, err := s.Station("a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Station after Close: %v", err)
	}
	if _, err := s.Compact(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Compact after Close: %v", err)
	}
}

func TestRecords(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	val := []byte("v1")
	_, err := s.Update(ctx, func(tx *Tx) error {
		for _, k := range []string{"s1/b", "s1/a", "s2/a", "s10/a"} {
			if err := tx.Put(KindBooking, k, val); err != nil {
				return err
			}
		}
		return tx.Put(Kind("custom"), "k", []byte("c"))
	})
	if err != nil {
		t.Fatal(err)
	}
	val[0] = 'X' // Put copied it
	err = s.View(func(tx *Tx) error {
		v, err := tx.Get(KindBooking, "s1/a")
		if err != nil || string(v) != "v1" {
			t.Errorf("Get = %q, %v", v, err)
		}
		if v, err := tx.Get(Kind("custom"), "k"); err != nil || string(v) != "c" {
			t.Errorf("Get custom = %q, %v", v, err)
		}
		if _, err := tx.Get(KindBooking, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get missing: %v", err)
		}
		if _, err := tx.Get(Kind("never"), "k"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get in missing kind: %v", err)
		}
		var keys []string
		if err := tx.Scan(KindBooking, "s1/", func(k string, _ []byte) bool { keys = append(keys, k); return true }); err != nil {
			t.Error(err)
		}
		if strings.Join(keys, ",") != "s1/a,s1/b" {
			t.Errorf("Scan s1/ = %v", keys)
		}
		keys = nil
		tx.Scan(KindBooking, "", func(k string, _ []byte) bool { keys = append(keys, k); return len(keys) < 3 })
		if strings.Join(keys, ",") != "s1/a,s1/b,s10/a" {
			t.Errorf("Scan all, stop at 3 = %v", keys)
		}
		if err := tx.Put(KindBooking, "x", nil); err == nil {
			t.Error("Put in a View succeeded")
		}
		if err := tx.Append(&Event{Type: "x", StationID: "a"}); err == nil {
			t.Error("Append in a View succeeded")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Update(ctx, func(tx *Tx) error {
		if err := tx.Delete(KindBooking, "s1/a"); err != nil {
			return err
		}
		if err := tx.Delete(KindBooking, "missing"); err != nil {
			return err
		}
		return tx.Delete(Kind("never"), "k")
	})
	if err != nil {
		t.Fatal(err)
	}
	var leaked *Tx
	s.View(func(tx *Tx) error {
		if _, err := tx.Get(KindBooking, "s1/a"); !errors.Is(err, ErrNotFound) {
			t.Errorf("after Delete: %v", err)
		}
		leaked = tx
		return nil
	})
	if _, err := leaked.Get(KindBooking, "s1/b"); err == nil {
		t.Error("Tx usable after its fn returned")
	}
}

func TestStationsAndUsers(t *testing.T) {
	s := openT(t, "", Options{})
	ctx := context.Background()
	h := sha256.Sum256([]byte("secret"))
	for _, id := range []string{"st-2", "st-1"} {
		if err := s.CreateStation(ctx, Station{ID: id, Name: "Main " + id, Slots: 12, Lat: 1.5, Lon: -2, SecretHash: h}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateStation(ctx, Station{ID: "st-1", SecretHash: h}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate station: %v", err)
	}
	for _, bad := range []Station{{ID: "", SecretHash: h}, {ID: "a/b", SecretHash: h}, {ID: "ok"}, {ID: "ok", SecretHash: h, Slots: -1}} {
		if err := s.CreateStation(ctx, bad); err == nil {
			t.Errorf("CreateStation(%+v) succeeded", bad)
		}
	}
	st, err := s.Station("st-1")
	if err != nil || st.Name != "Main st-1" || st.Slots != 12 || st.Lat != 1.5 || st.Lon != -2 || st.SecretHash != h || st.CreatedAt.IsZero() {
		t.Fatalf("Station = %+v, %v", st, err)
	}
	if _, err := s.Station("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown station: %v", err)
	}
	all, err := s.Stations()
	if err != nil || len(all) != 2 || all[0].ID != "st-1" || all[1].ID != "st-2" {
		t.Fatalf("Stations = %+v, %v", all, err)
	}
	if got, err := s.StationSecretHash("st-2"); err != nil || got != h {
		t.Fatalf("StationSecretHash = %x, %v", got, err)
	}
	if _, err := s.StationSecretHash("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("StationSecretHash unknown: %v", err)
	}
	s.View(func(tx *Tx) error {
		if st, err := tx.Station("st-2"); err != nil || st.ID != "st-2" {
			t.Errorf("tx.Station = %+v, %v", st, err)
		}
		return nil
	})

	th := sha256.Sum256([]byte("token"))
	if err := s.CreateUser(ctx, User{ID: "alice", TokenHash: th}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, User{ID: "alice", TokenHash: sha256.Sum256([]byte("other"))}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	if err := s.CreateUser(ctx, User{ID: "bob", TokenHash: th}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate token hash: %v", err)
	}
	if err := s.CreateUser(ctx, User{ID: "carol"}); err == nil {
		t.Fatal("user without token hash created")
	}
	u, err := s.UserByTokenHash(th)
	if err != nil || u.ID != "alice" || u.TokenHash != th || u.CreatedAt.IsZero() {
		t.Fatalf("UserByTokenHash = %+v, %v", u, err)
	}
	if _, err := s.UserByTokenHash(sha256.Sum256([]byte("wrong"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
	if u, err := s.User("alice"); err != nil || u.ID != "alice" {
		t.Fatalf("User = %+v, %v", u, err)
	}
	if _, err := s.User("bob"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("User(bob): %v", err)
	}
}

func TestEventsIterator(t *testing.T) {
	s := openT(t, "", Options{})
	const n = 3*eventsChunk + 7
	evs := make([]Event, n)
	for i := range evs {
		evs[i] = stationEv("a", "x")
		if i%2 == 1 {
			evs[i] = userEv("u")
		}
	}
	appendAll(t, s, evs...)
	var prev uint64
	count := 0
	for ev, err := range s.Events(Channel{Kind: OneStation, ID: "a"}, 10) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Seq <= prev || ev.Seq <= 10 || ev.StationID != "a" || ev.UserID != "" {
			t.Fatalf("event %d after %d: %+v", ev.Seq, prev, ev)
		}
		prev = ev.Seq
		count++
	}
	if want := (n+1)/2 - 5; count != want {
		t.Fatalf("iterated %d events, want %d", count, want)
	}
	count = 0
	for range s.Events(Channel{Kind: Everything}, 0) {
		count++
		if count == 3 {
			break
		}
	}
	if count != 3 {
		t.Fatalf("break after 3 gave %d", count)
	}
}

func TestMaxBatch(t *testing.T) {
	s := openT(t, "", Options{MaxBatch: 3})
	var calls []int
	var mu sync.Mutex
	s.SetCommitListener(func(evs []Event) {
		mu.Lock()
		calls = append(calls, len(evs))
		mu.Unlock()
	})
	release := blockCommitter(t, s)
	const n = 7
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := s.Update(context.Background(), func(tx *Tx) error {
				ev := stationEv("a", "x")
				return tx.Append(&ev)
			}); err != nil {
				t.Error(err)
			}
		})
	}
	waitQueued(t, s, n)
	release()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(calls) != "[3 3 1]" {
		t.Fatalf("commit sizes %v, want [3 3 1]", calls)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	buf := make([]byte, recordHeaderLen("x", "st-1", "u"))
	putRecordHeader(buf, 42, "x", "st-1", "u")
	f.Add(append(buf, `{"type":"x"}`...))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, v []byte) {
		r, ok := decodeRecord(v)
		if !ok {
			return
		}
		re := make([]byte, recordHeaderLen(string(r.typ), string(r.sid), string(r.uid)))
		putRecordHeader(re, r.ns, string(r.typ), string(r.sid), string(r.uid))
		if string(append(re, r.data...)) != string(v) {
			t.Fatalf("record %x does not round-trip", v)
		}
	})
}

// TestUpdateContextInBatch: a ctx that ends while earlier fns of its batch
// run still keeps its fn from running, and the others commit.
func TestUpdateContextInBatch(t *testing.T) {
	s := openT(t, "", Options{})
	release := blockCommitter(t, s)
	aStarted, aGate := make(chan struct{}), make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		_, err := s.Update(context.Background(), func(tx *Tx) error {
			select {
			case <-aStarted:
			default:
				close(aStarted)
			}
			<-aGate
			ev := stationEv("a", "x")
			return tx.Append(&ev)
		})
		aDone <- err
	}()
	waitQueued(t, s, 1)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{}, 1)
	bDone := make(chan error, 1)
	go func() {
		_, err := s.Update(ctx, func(*Tx) error { ran <- struct{}{}; return nil })
		bDone <- err
	}()
	waitQueued(t, s, 2)
	release()
	waitChan(t, aStarted, "first fn of the batch")
	cancel()
	close(aGate)
	if err := <-aDone; err != nil {
		t.Fatalf("first Update: %v", err)
	}
	if err := <-bDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Update: %v, want context.Canceled", err)
	}
	select {
	case <-ran:
		t.Fatal("fn of a cancelled Update ran")
	default:
	}
	if s.LastSeq() != 1 {
		t.Fatalf("LastSeq %d, want 1", s.LastSeq())
	}
}

// waitClosing waits until Close has started on s.
func waitClosing(t *testing.T, s *Store) {
	t.Helper()
	testwait.For(t, testwait.Timeout, "Close to start", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	})
}
