package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"
)

// compactChunk bounds how many events one compaction transaction removes, so
// the committer never waits long behind it.
const compactChunk = 2048

// Compact applies the retention policy now and reports how many events it
// removed. It also runs by itself every Options.CompactEvery.
//
// Retention removes a prefix of the log: the oldest events beyond
// Retention.MaxEvents, and the oldest events whose Time is older than
// Retention.MaxAge (an event is removed by age once it and every event
// before it are that old). It works in transactions of at most a few
// thousand events and stops early, with ctx.Err(), when ctx ends.
func (s *Store) Compact(ctx context.Context) (int, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		n, more, err := s.compactOnce(time.Now())
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// victim is one event to remove, with its index keys.
type victim struct {
	seqKey [8]byte
	sidKey []byte // nil if no station index entry
	uidKey []byte
}

// compactOnce removes up to compactChunk events in one transaction and
// reports whether more may be due.
func (s *Store) compactOnce(now time.Time) (removed int, more bool, err error) {
	btx, err := s.db.Begin(true)
	if err != nil {
		return 0, false, fmt.Errorf("store: compact: %w", mapBoltErr(err))
	}
	defer func() {
		if err != nil {
			_ = btx.Rollback()
		}
	}()
	ret := s.opts.Retention
	var last uint64
	if v := btx.Bucket(bucketSys).Get(keyLastSeq); len(v) == 8 {
		last = binary.BigEndian.Uint64(v)
	}
	var countCut uint64 // remove seq ≤ countCut
	if ret.MaxEvents > 0 && last > uint64(ret.MaxEvents) {
		countCut = last - uint64(ret.MaxEvents)
	}
	ageCut := int64(-1 << 63) // remove ns < ageCut
	if ret.MaxAge > 0 {
		ageCut = now.Add(-ret.MaxAge).UnixNano()
	}

	evb := eventsBucket(btx)
	victims := make([]victim, 0, 64)
	c := evb.Cursor()
	k, v := c.First()
	for ; k != nil && len(victims) < compactChunk; k, v = c.Next() {
		if len(k) != 8 {
			return 0, false, fmt.Errorf("store: compact: event key of %d bytes: %w", len(k), errCorrupt)
		}
		seq := binary.BigEndian.Uint64(k)
		r, ok := decodeRecord(v)
		if !ok {
			return 0, false, fmt.Errorf("store: compact: event %d: %w", seq, errCorrupt)
		}
		if seq > countCut && r.ns >= ageCut {
			break
		}
		var vc victim
		copy(vc.seqKey[:], k)
		if len(r.sid) > 0 {
			vc.sidKey = appendStationIndexKey(nil, string(r.sid), seq)
		}
		if len(r.uid) > 0 {
			vc.uidKey = appendIndexKey(nil, string(r.uid), seq)
		}
		victims = append(victims, vc)
	}
	if len(victims) == 0 {
		_ = btx.Rollback()
		return 0, false, nil
	}
	// The first retained seq: the key the scan stopped at, or, if the scan
	// ran out of events, everything up to last is gone.
	newFirst := last + 1
	if k != nil {
		newFirst = binary.BigEndian.Uint64(k)
	}
	more = len(victims) == compactChunk

	idxS, idxU := btx.Bucket(bucketIdxStation), btx.Bucket(bucketIdxUser)
	for i := range victims {
		vc := &victims[i]
		if err := evb.Delete(vc.seqKey[:]); err != nil {
			return 0, false, fmt.Errorf("store: compact: %w", err)
		}
		if vc.sidKey != nil {
			if err := idxS.Delete(vc.sidKey); err != nil {
				return 0, false, fmt.Errorf("store: compact: %w", err)
			}
		}
		if vc.uidKey != nil {
			if err := idxU.Delete(vc.uidKey); err != nil {
				return 0, false, fmt.Errorf("store: compact: %w", err)
			}
		}
	}
	// Raise firstSeq before the commit: a reader whose snapshot still has the
	// events gets ErrCompacted a moment early, never a silent gap.
	old := s.firstSeq.Load()
	s.firstSeq.Store(newFirst)
	if err := btx.Commit(); err != nil {
		s.firstSeq.Store(old)
		return 0, false, fmt.Errorf("store: compact: commit: %w", mapBoltErr(err))
	}
	return len(victims), more, nil
}
