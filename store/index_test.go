package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// appendStations appends n events round-robin over sids in one Update and
// returns the seqs of each station's events.
func appendStations(t *testing.T, s *Store, sids []string, n int) map[string][]uint64 {
	t.Helper()
	want := map[string][]uint64{}
	evs, err := s.Update(context.Background(), func(tx *Tx) error {
		for i := range n {
			ev := stationEv(sids[i%len(sids)], "inventory_update")
			if err := tx.Append(&ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		want[ev.StationID] = append(want[ev.StationID], ev.Seq)
	}
	return want
}

func stationSeqs(t *testing.T, s *Store, sid string, since uint64, limit int) []uint64 {
	t.Helper()
	evs, err := s.EventsAfter(Channel{Kind: OneStation, ID: sid}, since, limit)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, ev := range evs {
		if ev.StationID != sid {
			t.Fatalf("event %d of station %q in %q's read", ev.Seq, ev.StationID, sid)
		}
		seqs = append(seqs, ev.Seq)
	}
	return seqs
}

// A station's read spans several index epochs, from any since and with any
// limit, without gap or foreign event; a prefix of one station's id is
// another station.
func TestStationIndexAcrossEpochs(t *testing.T) {
	s := openT(t, "", Options{})
	sids := []string{"a", "ab", "b", "c-1", "c-10"}
	n := 3<<indexEpochBits + 100
	want := appendStations(t, s, sids, n)
	// A station with one event in the last epoch only.
	late := appendStations(t, s, []string{"late"}, 1)
	for _, sid := range sids {
		all := want[sid]
		for _, tc := range []struct {
			since uint64
			limit int
		}{{0, 0}, {0, 7}, {1 << indexEpochBits, 0}, {1<<indexEpochBits - 3, 5}, {all[len(all)/2], 0}, {all[len(all)/2], 1000}, {all[len(all)-1], 0}} {
			var exp []uint64
			for _, q := range all {
				if q > tc.since && (tc.limit == 0 || len(exp) < tc.limit) {
					exp = append(exp, q)
				}
			}
			if got := stationSeqs(t, s, sid, tc.since, tc.limit); !slices.Equal(got, exp) {
				t.Fatalf("%s since %d limit %d: %d events (%v…), want %d", sid, tc.since, tc.limit, len(got), got[:min(len(got), 5)], len(exp))
			}
		}
	}
	if got := stationSeqs(t, s, "late", 0, 0); !slices.Equal(got, late["late"]) {
		t.Fatalf("late: %v, want %v", got, late["late"])
	}
	if got := stationSeqs(t, s, "nobody", 0, 0); len(got) != 0 {
		t.Fatalf("unknown station: %v", got)
	}
}

// A data file whose station index has the sid-first keys of earlier
// versions is migrated at open: reads find every event, the old bucket is
// gone, and new events are indexed too.
func TestStationIndexMigration(t *testing.T) {
	path := filepath.Join(t.TempDir(), "swapd.db")
	s := openT(t, path, Options{})
	sids := []string{"s1", "s2", "s3"}
	want := appendStations(t, s, sids, 1<<indexEpochBits+50)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite the index the way earlier versions kept it.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(btx *bolt.Tx) error {
		if err := btx.DeleteBucket(bucketIdxStation); err != nil {
			return err
		}
		if _, err := btx.CreateBucket(bucketIdxStation); err != nil {
			return err
		}
		old, err := btx.CreateBucket(bucketIdxStationOld)
		if err != nil {
			return err
		}
		for sid, seqs := range want {
			for _, q := range seqs {
				if err := old.Put(appendIndexKey(nil, sid, q), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	s = openT(t, path, Options{})
	more := appendStations(t, s, sids, 10)
	for _, sid := range sids {
		exp := append(slices.Clone(want[sid]), more[sid]...)
		if got := stationSeqs(t, s, sid, 0, 0); !slices.Equal(got, exp) {
			t.Fatalf("%s after migration: %d events, want %d", sid, len(got), len(exp))
		}
	}
	if err := s.view(func(btx *bolt.Tx) error {
		if btx.Bucket(bucketIdxStationOld) != nil {
			return fmt.Errorf("old index bucket still there")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, s, bucketIdxStation); n != 1<<indexEpochBits+60 {
		t.Fatalf("%d index entries, want %d", n, 1<<indexEpochBits+60)
	}
}

// New index keys of one commit fall into the newest epoch: keys of
// different stations with seqs in one epoch sort together, ahead of every
// key of a later epoch.
func TestStationIndexKeyOrder(t *testing.T) {
	e := uint64(1) << indexEpochBits
	keys := [][]byte{
		appendStationIndexKey(nil, "zz", e-1),
		appendStationIndexKey(nil, "a", e),
		appendStationIndexKey(nil, "zz", e+1),
		appendStationIndexKey(nil, "a", 2*e),
	}
	if !slices.IsSortedFunc(keys, func(a, b []byte) int { return slices.Compare(a, b) }) {
		t.Fatal("station index keys are not ordered by epoch first")
	}
	if got := binary.BigEndian.Uint64(keys[2][len(keys[2])-8:]); got != e+1 {
		t.Fatalf("seq %d in key, want %d", got, e+1)
	}
}
