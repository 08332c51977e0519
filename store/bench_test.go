package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
	bolt "go.etcd.io/bbolt"
)

var benchFields = []byte(`{"station_id":"st-0001","available_batteries":7,"booked_batteries":1,"charging_batteries":3,"empty_slots":1,"faulted_slots":0,"total_slots":12}`)

// runWriters splits b.N appends over w goroutines, each calling do once per
// append, and reports records/s.
func runWriters(b *testing.B, w int, do func(worker int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, w)
	b.ResetTimer()
	start := time.Now()
	for i := range w {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}

var writerCounts = []int{1, 10, 100}

// BenchmarkAppendGroupCommit appends one event per Update (with fsync) from
// w concurrent writers.
func BenchmarkAppendGroupCommit(b *testing.B) {
	for _, w := range writerCounts {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			s := openT(b, "", Options{})
			var commits atomic.Int64
			s.SetCommitListener(func([]Event) { commits.Add(1) })
			b.Cleanup(func() {
				if n := commits.Load(); n > 0 {
					b.ReportMetric(float64(b.N)/float64(n), "records/commit")
				}
			})
			sids := make([]string, w)
			for i := range sids {
				sids[i] = fmt.Sprintf("st-%04d", i)
			}
			runWriters(b, w, func(i int) error {
				_, err := s.Update(context.Background(), func(tx *Tx) error {
					return tx.Append(&Event{Type: "inventory_update", StationID: sids[i], Fields: benchFields})
				})
				return err
			})
		})
	}
}

// BenchmarkAppendBoltBatch does the same writes (event record and station
// index entry) through bbolt's DB.Batch, for comparison: with its defaults
// (MaxBatchSize 1000, MaxBatchDelay 10ms) and with MaxBatchSize 100.
func BenchmarkAppendBoltBatch(b *testing.B) {
	for _, maxSize := range []int{1000, 100} {
		for _, w := range writerCounts {
			b.Run(fmt.Sprintf("max=%d/writers=%d", maxSize, w), func(b *testing.B) {
				benchBoltBatch(b, maxSize, w)
			})
		}
	}
}

func benchBoltBatch(b *testing.B, maxSize, w int) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "bolt.db"), 0o600, &bolt.Options{
		FreelistType: bolt.FreelistMapType, NoFreelistSync: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	db.MaxBatchSize = maxSize
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, n := range [][]byte{bucketEvents, bucketIdxStation} {
			if _, err := tx.CreateBucket(n); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	sids := make([]string, w)
	for i := range sids {
		sids[i] = fmt.Sprintf("st-%04d", i)
	}
	runWriters(b, w, func(i int) error {
		return db.Batch(func(tx *bolt.Tx) error {
			evb := tx.Bucket(bucketEvents)
			seq, err := evb.NextSequence()
			if err != nil {
				return err
			}
			ts := time.Now()
			hdr := recordHeaderLen("inventory_update", sids[i], "")
			buf := make([]byte, hdr, hdr+len(benchFields)+80)
			putRecordHeader(buf, ts.UnixNano(), "inventory_update", sids[i], "")
			buf = wire.EncodeEvent(buf, "inventory_update", seq, ts, benchFields)
			var k [8]byte
			binary.BigEndian.PutUint64(k[:], seq)
			if err := evb.Put(k[:], buf); err != nil {
				return err
			}
			return tx.Bucket(bucketIdxStation).Put(appendStationIndexKey(nil, sids[i], seq), nil)
		})
	})
}

// BenchmarkEventsAfterStation reads 100 events of one station out of a log
// shared by 100 stations.
func BenchmarkEventsAfterStation(b *testing.B) {
	s := openT(b, "", Options{})
	const stations, per = 100, 200
	_, err := s.Update(context.Background(), func(tx *Tx) error {
		for i := range stations * per {
			if err := tx.Append(&Event{Type: "inventory_update", StationID: fmt.Sprintf("st-%04d", i%stations), Fields: benchFields}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	ch := Channel{Kind: OneStation, ID: "st-0042"}
	since := s.LastSeq() - 100*stations
	b.ReportAllocs()
	for b.Loop() {
		evs, err := s.EventsAfter(ch, since, 0)
		if err != nil || len(evs) != 100 {
			b.Fatalf("%d events, %v", len(evs), err)
		}
	}
}

func BenchmarkStationSecretHash(b *testing.B) {
	s := openT(b, "", Options{})
	if err := s.CreateStation(context.Background(), Station{ID: "st-1", SecretHash: [32]byte{1}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.StationSecretHash("st-1"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitTelemetry is the committer's share of a telemetry message
// at scale: 5,000 stations, each update putting a 250-byte state record and
// appending one station event, from 2,048 concurrent writers (so batches are
// large, as under load). The log holds 200,000 events first, so the
// indexes have the size of a few minutes of load.
func BenchmarkCommitTelemetry(b *testing.B) {
	s := openT(b, "", Options{})
	const stations = 5000
	sids := make([]string, stations)
	for i := range sids {
		sids[i] = fmt.Sprintf("st-%04d", i)
	}
	state := make([]byte, 250)
	ctx := context.Background()
	for chunk := range 50 {
		if _, err := s.Update(ctx, func(tx *Tx) error {
			for i := range 4000 {
				sid := sids[(chunk*4000+i)%stations]
				if err := tx.Put(KindStationState, sid, state); err != nil {
					return err
				}
				if err := tx.Append(&Event{Type: "inventory_update", StationID: sid, Fields: benchFields}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	var n atomic.Int64
	runWriters(b, 2048, func(int) error {
		sid := sids[n.Add(7919)%stations]
		_, err := s.Update(ctx, func(tx *Tx) error {
			if err := tx.Put(KindStationState, sid, state); err != nil {
				return err
			}
			return tx.Append(&Event{Type: "inventory_update", StationID: sid, Fields: benchFields})
		})
		return err
	})
}

// BenchmarkAppendAsync appends one event per request from one writer that
// keeps up to depth requests queued with UpdateAsync (depth 1: each waits
// for the previous one's fsync, like a writer calling Update in a loop).
func BenchmarkAppendAsync(b *testing.B) {
	for _, depth := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			s := openT(b, "", Options{})
			var commits atomic.Int64
			s.SetCommitListener(func([]Event) { commits.Add(1) })
			slots := make(chan struct{}, depth)
			errs := make(chan error, 1)
			fn := func(tx *Tx) error {
				return tx.Append(&Event{Type: "inventory_update", StationID: "st-0001", Fields: benchFields})
			}
			done := func(_ []Event, err error) {
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
				<-slots
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				slots <- struct{}{}
				if err := s.UpdateAsync(fn, done); err != nil {
					b.Fatal(err)
				}
			}
			for range depth {
				slots <- struct{}{}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			if n := commits.Load(); n > 0 {
				b.ReportMetric(float64(b.N)/float64(n), "records/commit")
			}
		})
	}
}
