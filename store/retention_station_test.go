package store

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// flood appends n events of station sid's own channel, in commits of 1000.
func flood(t testing.TB, s *Store, sid string, n int) {
	t.Helper()
	for n > 0 {
		k := min(n, 1000)
		evs := make([]Event, k)
		for i := range evs {
			evs[i] = stationEv(sid, "battery_added")
		}
		appendAll(t, s, evs...)
		n -= k
	}
}

func logSize(t testing.TB, s *Store) int {
	t.Helper()
	return countKeys(t.(*testing.T), s, bucketEvents)
}

// One station flooding the log (battery-id churn) cannot evict anyone
// else's events: the per-station cap removes the flooding station's own
// oldest events first, from the middle of the log, so a quiet user's
// notification and a quiet station's events stay resumable. A reader of
// the flooding station (or of all stations) from before the cut gets
// ErrCompacted, and from FirstSeqOf on reads without a gap. The cut and
// the counts survive a reopen.
func TestStationCapKeepsOthersEvents(t *testing.T) {
	const (
		maxEvents  = 10_000
		stationCap = 2_000
		floodN     = 50_000
	)
	setup := func(t *testing.T, path string, stationCap int) (*Store, []Event) {
		s := openT(t, path, Options{Retention: Retention{MaxAge: -1, MaxEvents: maxEvents, MaxStationEvents: stationCap}})
		booked := stationEv("F", "booking_confirmed")
		booked.UserID = "rider"
		early := appendAll(t, s, userEv("quiet"), stationEv("Q", "inventory_update"), booked)
		flood(t, s, "F", floodN)
		return s, early
	}

	t.Run("without the station cap", func(t *testing.T) {
		s, early := setup(t, "", -1)
		if _, err := s.Compact(context.Background()); err != nil {
			t.Fatal(err)
		}
		if _, err := s.EventsAfter(Channel{Kind: OneUser, ID: "quiet"}, early[0].Seq-1, 0); !errors.Is(err, ErrCompacted) {
			t.Fatalf("the flood left the quiet user's notification (err %v): the test does not show the problem", err)
		}
		t.Logf("no station cap: %d flood events evict the quiet user's notification; first seq %d", floodN, s.FirstSeq())
	})

	path := t.TempDir() + "/swapd.db"
	s, early := setup(t, path, stationCap)
	t0 := time.Now()
	n, err := s.Compact(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("station cap %d, retention %d: Compact removed %d of %d events in %v; %d left in the log",
		stationCap, maxEvents, n, floodN+3, time.Since(t0).Round(time.Millisecond), logSize(t, s))
	if n != floodN-stationCap {
		t.Fatalf("Compact removed %d, want %d (the flood beyond the cap)", n, floodN-stationCap)
	}
	check := func(t *testing.T, s *Store, fEvents int) {
		t.Helper()
		// The quiet user's notification and the flooding station's user
		// event resume from before them.
		for _, c := range []struct {
			ch Channel
			ev Event
		}{
			{Channel{Kind: OneUser, ID: "quiet"}, early[0]},
			{Channel{Kind: OneStation, ID: "Q"}, early[1]},
			{Channel{Kind: OneUser, ID: "rider"}, early[2]},
		} {
			got, err := s.EventsAfter(c.ch, c.ev.Seq-1, 0)
			if err != nil || len(got) != 1 || got[0].Seq != c.ev.Seq {
				t.Fatalf("%+v after %d: %v, %v; want seq %d", c.ch, c.ev.Seq-1, seqs(got), err, c.ev.Seq)
			}
		}
		// The flooding station and all stations: a gap from before the
		// cut, complete from FirstSeqOf.
		for _, ch := range []Channel{{Kind: OneStation, ID: "F"}, {Kind: AllStations}, {Kind: Everything}} {
			if _, err := s.EventsAfter(ch, early[2].Seq, 0); !errors.Is(err, ErrCompacted) {
				t.Fatalf("%+v from before the cut: err %v, want ErrCompacted", ch, err)
			}
		}
		from := s.FirstSeqOf(Channel{Kind: OneStation, ID: "F"})
		got, err := s.EventsAfter(Channel{Kind: OneStation, ID: "F"}, from-1, 0)
		if err != nil || len(got) != fEvents || got[0].Seq != from || got[len(got)-1].Seq != s.LastSeq() {
			t.Fatalf("F from FirstSeqOf %d: %d events, %v", from, len(got), err)
		}
		if all := s.FirstSeqOf(Channel{Kind: AllStations}); all != from {
			t.Fatalf("FirstSeqOf(all stations) = %d, want %d", all, from)
		}
		if _, err := s.EventsAfter(Channel{Kind: AllStations}, from-1, 0); err != nil {
			t.Fatal(err)
		}
		if q := s.FirstSeqOf(Channel{Kind: OneStation, ID: "Q"}); q != s.FirstSeq() {
			t.Fatalf("FirstSeqOf(Q) = %d, want FirstSeq %d", q, s.FirstSeq())
		}
	}
	check(t, s, stationCap)

	// Reopen: the cut is stored, the counts are taken again, and the next
	// flood is cut the same way while the global count keeps its bound.
	s.Close()
	s = openT(t, path, Options{Retention: Retention{MaxAge: -1, MaxEvents: maxEvents, MaxStationEvents: stationCap}})
	check(t, s, stationCap)
	if n, err := s.Compact(context.Background()); err != nil || n != 0 {
		t.Fatalf("Compact after reopen = %d, %v; want 0", n, err)
	}
	flood(t, s, "F", 5_000)
	for i := range 9 {
		flood(t, s, fmt.Sprintf("G%d", i), 1_000) // other stations, under the cap
	}
	if _, err := s.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	if k := logSize(t, s); k != maxEvents {
		t.Fatalf("%d events in the log, want %d (the global count)", k, maxEvents)
	}
	// The global count now removed a prefix, the quiet user's notification
	// with it: the station cap bounds one station, not the whole log.
	if _, err := s.EventsAfter(Channel{Kind: OneUser, ID: "quiet"}, 0, 0); !errors.Is(err, ErrCompacted) {
		t.Fatalf("quiet user after the global prefix: err %v", err)
	}
	got, err := s.EventsAfter(Channel{Kind: OneStation, ID: "F"}, s.FirstSeqOf(Channel{Kind: OneStation, ID: "F"})-1, 0)
	if err != nil || len(got) > stationCap {
		t.Fatalf("F after the second flood: %d events, %v", len(got), err)
	}
}
