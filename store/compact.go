package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactChunk bounds how many events one compaction transaction removes, so
// the committer never waits long behind it.
const compactChunk = 2048

// bucketStationCuts holds, per station, the highest seq of the station's
// own events removed by Retention.MaxStationEvents: sid → be64(seq).
var bucketStationCuts = []byte("station_cuts")

// logCounts is what retention needs to know about the log without reading
// it: how many events it holds, how many of them belong to each station's
// own channel, and the cut of each station whose oldest events the
// per-station cap removed.
//
// The counts of the events that were in the log at Open are taken by the
// first Compact (one walk over the log, off the Open path); events
// committed since Open are counted by the committer. Removals happen only
// in Compact, after that walk.
type logCounts struct {
	mu      sync.Mutex
	base    uint64 // s.last at Open: the walk counts seqs ≤ base
	counted bool   // the walk is done (compactMu)
	total   int
	station map[string]int // events with a station id and no user id

	// cuts: station id → highest seq of its own events removed by the
	// per-station cap; every one of its own events up to it is gone.
	// maxCut is the highest of them: the all-stations channel and the
	// whole log have a hole up to there. Both are raised before the
	// commit that removes the events (readers may see ErrCompacted a
	// moment early, never a silent gap) and put back if it fails.
	cmu    sync.RWMutex
	cuts   map[string]uint64
	maxCut uint64
}

// init loads the cuts and notes the newest seq at Open.
func (lc *logCounts) init(btx *bolt.Tx, last uint64) error {
	lc.base = last
	lc.station = map[string]int{}
	lc.cuts = map[string]uint64{}
	b, err := btx.CreateBucketIfNotExists(bucketStationCuts)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketStationCuts, err)
	}
	return b.ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("station cut of %q: %d bytes: %w", k, len(v), errCorrupt)
		}
		c := binary.BigEndian.Uint64(v)
		lc.cuts[string(k)] = c
		lc.maxCut = max(lc.maxCut, c)
		return nil
	})
}

// appended counts the events of a commit (committer goroutine, after the
// commit).
func (lc *logCounts) appended(live []*request) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	for _, r := range live {
		lc.total += len(r.events)
		for i := range r.events {
			if ev := &r.events[i]; ev.StationID != "" && ev.UserID == "" {
				lc.station[ev.StationID]++
			}
		}
	}
}

func (lc *logCounts) removed(total int, sid string, n int) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.total -= total
	if sid == "" || n == 0 {
		return
	}
	if lc.station[sid] -= n; lc.station[sid] <= 0 {
		delete(lc.station, sid)
	}
}

// cut returns the seq up to which ch has lost events to the per-station
// cap (0: none): a read of ch after a since below it has a gap.
func (lc *logCounts) cut(ch Channel) uint64 {
	lc.cmu.RLock()
	defer lc.cmu.RUnlock()
	switch ch.Kind {
	case OneStation:
		return lc.cuts[ch.ID]
	case AllStations, Everything:
		return lc.maxCut
	}
	return 0
}

func (lc *logCounts) setCut(sid string, c, maxCut uint64) {
	lc.cmu.Lock()
	defer lc.cmu.Unlock()
	if c == 0 {
		delete(lc.cuts, sid)
	} else {
		lc.cuts[sid] = c
	}
	lc.maxCut = maxCut
}

// FirstSeqOf returns the oldest seq from which ch's events are complete:
// FirstSeq, or later for a station channel (and the all-stations and
// whole-log reads) whose oldest events the per-station cap removed.
// EventsAfter(ch, FirstSeqOf(ch)-1, …) does not return ErrCompacted unless
// retention runs meanwhile.
func (s *Store) FirstSeqOf(ch Channel) uint64 {
	first := s.firstSeq.Load()
	if c := s.logc.cut(ch); c+1 > first {
		return c + 1
	}
	return first
}

// countLog counts the events that were in the log at Open (compactMu held,
// once).
func (s *Store) countLog() error {
	if s.logc.counted {
		return nil
	}
	total, station := 0, map[string]int{}
	err := s.view(func(btx *bolt.Tx) error {
		c := btx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("store: count events: key of %d bytes: %w", len(k), errCorrupt)
			}
			if binary.BigEndian.Uint64(k) > s.logc.base {
				break
			}
			r, ok := decodeRecord(v)
			if !ok {
				return fmt.Errorf("store: count events: event %d: %w", binary.BigEndian.Uint64(k), errCorrupt)
			}
			total++
			if len(r.sid) > 0 && len(r.uid) == 0 {
				station[string(r.sid)]++
			}
		}
		return nil
	})
	if err != nil {
		return mapBoltErr(err)
	}
	lc := &s.logc
	lc.mu.Lock()
	lc.total += total
	for sid, n := range station {
		lc.station[sid] += n
	}
	lc.mu.Unlock()
	lc.counted = true
	return nil
}

// Compact applies the retention policy now and reports how many events it
// removed. It also runs by itself every Options.CompactEvery.
//
// First every station over Retention.MaxStationEvents loses its own oldest
// events (those with its station id and no user id) down to the cap, from
// wherever they are in the log; then the oldest events beyond
// Retention.MaxEvents (counting what is left) and the oldest events whose
// Time is older than Retention.MaxAge (an event is removed by age once it
// and every event before it are that old) go, a prefix of the log. It works
// in transactions of at most a few thousand events and stops early, with
// ctx.Err(), when ctx ends.
func (s *Store) Compact(ctx context.Context) (int, error) {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	if err := s.countLog(); err != nil {
		return 0, err
	}
	total := 0
	if capN := s.opts.Retention.MaxStationEvents; capN > 0 {
		for _, sid := range s.stationsOver(capN) {
			for {
				if err := ctx.Err(); err != nil {
					return total, err
				}
				s.logc.mu.Lock()
				excess := s.logc.station[sid] - capN
				s.logc.mu.Unlock()
				if excess <= 0 {
					break
				}
				n, err := s.compactStationOnce(sid, min(excess, compactChunk))
				total += n
				if err != nil {
					return total, err
				}
				if n == 0 {
					break // nothing of its own left to remove
				}
			}
		}
	}
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

// stationsOver returns the stations whose own channel holds more than capN
// events, in id order.
func (s *Store) stationsOver(capN int) []string {
	s.logc.mu.Lock()
	defer s.logc.mu.Unlock()
	var out []string
	for sid, n := range s.logc.station {
		if n > capN {
			out = append(out, sid)
		}
	}
	sort.Strings(out)
	return out
}

// compactStationOnce removes up to n of station sid's own oldest events in
// one transaction and raises its cut.
func (s *Store) compactStationOnce(sid string, n int) (removed int, err error) {
	btx, err := s.db.Begin(true)
	if err != nil {
		return 0, fmt.Errorf("store: compact station %s: %w", sid, mapBoltErr(err))
	}
	defer func() {
		if err != nil {
			_ = btx.Rollback()
		}
	}()
	var last uint64
	if v := btx.Bucket(bucketSys).Get(keyLastSeq); len(v) == 8 {
		last = binary.BigEndian.Uint64(v)
	}
	from := max(s.firstSeq.Load(), s.logc.cut(Channel{Kind: OneStation, ID: sid})+1)
	evb, idx := eventsBucket(btx), btx.Bucket(bucketIdxStation)
	var seqKeys, idxKeys [][]byte
	var cut uint64
	ic, ec := idx.Cursor(), evb.Cursor()
	buf := make([]byte, 0, 8+len(sid)+9)
scan:
	for e := from >> indexEpochBits; e <= last>>indexEpochBits; e++ {
		seek := appendStationIndexKey(buf[:0], sid, max(from, e<<indexEpochBits))
		prefix := seek[:len(seek)-8]
		for k, _ := ic.Seek(seek); k != nil && bytes.HasPrefix(k, prefix); k, _ = ic.Next() {
			if len(k) != len(prefix)+8 {
				continue
			}
			seqKey := k[len(prefix):]
			ek, v := ec.Seek(seqKey)
			if !bytes.Equal(ek, seqKey) {
				return 0, fmt.Errorf("store: compact station %s: index entry for missing event %d: %w", sid, binary.BigEndian.Uint64(seqKey), errCorrupt)
			}
			r, ok := decodeRecord(v)
			if !ok {
				return 0, fmt.Errorf("store: compact station %s: event %d: %w", sid, binary.BigEndian.Uint64(seqKey), errCorrupt)
			}
			if len(r.uid) > 0 {
				continue // a user's event: the user's channel keeps it
			}
			// bolt keys are valid only during the transaction and may not
			// be deleted while a cursor walks them: copy, delete after.
			seqKeys = append(seqKeys, bytes.Clone(seqKey))
			idxKeys = append(idxKeys, bytes.Clone(k))
			cut = binary.BigEndian.Uint64(seqKey)
			if len(seqKeys) >= n {
				break scan
			}
		}
	}
	if len(seqKeys) == 0 {
		_ = btx.Rollback()
		return 0, nil
	}
	for i := range seqKeys {
		if err := evb.Delete(seqKeys[i]); err != nil {
			return 0, fmt.Errorf("store: compact station %s: %w", sid, err)
		}
		if err := idx.Delete(idxKeys[i]); err != nil {
			return 0, fmt.Errorf("store: compact station %s: %w", sid, err)
		}
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], cut)
	if err := btx.Bucket(bucketStationCuts).Put([]byte(sid), v[:]); err != nil {
		return 0, fmt.Errorf("store: compact station %s: %w", sid, err)
	}
	oldCut, oldMax := s.logc.cut(Channel{Kind: OneStation, ID: sid}), s.logc.cut(Channel{Kind: Everything})
	s.logc.setCut(sid, cut, max(oldMax, cut))
	if err := btx.Commit(); err != nil {
		s.logc.setCut(sid, oldCut, oldMax)
		return 0, fmt.Errorf("store: compact station %s: commit: %w", sid, mapBoltErr(err))
	}
	s.logc.removed(len(seqKeys), sid, len(seqKeys))
	return len(seqKeys), nil
}

// victim is one event to remove, with its index keys.
type victim struct {
	seqKey [8]byte
	sidKey []byte // nil if no station index entry
	uidKey []byte
	own    string // the station whose own channel it is in ("" for a user's event)
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
	// excess: how many of the oldest events go by count. The log has holes
	// where the per-station cap removed events, so this counts events, not
	// seqs.
	excess := 0
	if ret.MaxEvents > 0 {
		s.logc.mu.Lock()
		excess = s.logc.total - ret.MaxEvents
		s.logc.mu.Unlock()
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
		if len(victims) >= excess && r.ns >= ageCut {
			break
		}
		var vc victim
		copy(vc.seqKey[:], k)
		if len(r.sid) > 0 {
			vc.sidKey = appendStationIndexKey(nil, string(r.sid), seq)
			if len(r.uid) == 0 {
				vc.own = string(r.sid)
			}
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
	if err := btx.Bucket(bucketSys).Put(keyFirstSeq, binary.BigEndian.AppendUint64(nil, newFirst)); err != nil {
		_ = btx.Rollback()
		return 0, false, fmt.Errorf("store: compact: %w", err)
	}
	old := s.firstSeq.Load()
	s.firstSeq.Store(newFirst)
	if err := btx.Commit(); err != nil {
		s.firstSeq.Store(old)
		return 0, false, fmt.Errorf("store: compact: commit: %w", mapBoltErr(err))
	}
	own := map[string]int{}
	for i := range victims {
		if victims[i].own != "" {
			own[victims[i].own]++
		}
	}
	s.logc.removed(len(victims), "", 0)
	for sid, n := range own {
		s.logc.removed(0, sid, n)
	}
	return len(victims), more, nil
}
