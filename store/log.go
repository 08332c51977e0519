package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"iter"
	"time"

	"github.com/swapbridge/swapbridge/wire"
	bolt "go.etcd.io/bbolt"
)

// An event record (the value under be64(seq) in the events bucket) is
//
//	version(1) | unix nanos (8, big-endian) | len(type)(1) | type |
//	len(station id)(1) | station id | len(user id)(1) | user id | wire frame
//
// The wire frame is the complete {"type":…,"seq":…,"ts":…,…} message, so
// reads hand it out without encoding anything.
const recordVersion = 1

func recordHeaderLen(typ, sid, uid string) int {
	return 1 + 8 + 3 + len(typ) + len(sid) + len(uid)
}

func putRecordHeader(dst []byte, ns int64, typ, sid, uid string) {
	dst[0] = recordVersion
	binary.BigEndian.PutUint64(dst[1:9], uint64(ns))
	i := 9
	for _, s := range [...]string{typ, sid, uid} {
		dst[i] = byte(len(s))
		i++
		i += copy(dst[i:], s)
	}
}

// record is a decoded event record; its slices point into the bolt value.
type record struct {
	ns            int64
	typ, sid, uid []byte
	data          []byte
}

func decodeRecord(v []byte) (record, bool) {
	var r record
	if len(v) < 12 || v[0] != recordVersion {
		return r, false
	}
	r.ns = int64(binary.BigEndian.Uint64(v[1:9]))
	v = v[9:]
	var fields [3][]byte
	for i := range fields {
		if len(v) < 1 {
			return r, false
		}
		n := int(v[0])
		if len(v) < 1+n {
			return r, false
		}
		fields[i] = v[1 : 1+n]
		v = v[1+n:]
	}
	r.typ, r.sid, r.uid, r.data = fields[0], fields[1], fields[2], v
	return r, true
}

// matches is Channel.Matches on a record.
func (c Channel) matchesRecord(r *record) bool {
	switch c.Kind {
	case AllStations:
		return len(r.uid) == 0 && len(r.sid) != 0
	case OneStation:
		return len(r.uid) == 0 && string(r.sid) == c.ID
	case OneUser:
		return string(r.uid) == c.ID
	case Everything:
		return true
	}
	return false
}

func (c Channel) validate() error {
	switch c.Kind {
	case AllStations, Everything:
		return nil
	case OneStation:
		return wire.CheckID("station id", c.ID)
	case OneUser:
		return wire.CheckID("user id", c.ID)
	}
	return fmt.Errorf("store: unknown channel kind %d", c.Kind)
}

// knownTypes interns the event types of the contract so reads do not
// allocate a string per event for them.
var knownTypes = func() map[string]string {
	m := map[string]string{}
	for _, t := range []string{
		wire.TypeInventoryUpdate, wire.TypeBatteryBooked, wire.TypeBatteryCollected,
		wire.TypeBatteryAdded, wire.TypeBatteryRemoved, wire.TypeStationStatus,
		wire.TypeBookingConfirmed, wire.TypeBookingReady, wire.TypeNotification,
	} {
		m[t] = t
	}
	return m
}()

// reader turns records into Events for one read, sharing allocations: the
// wire frames are copied into slabs and ids are interned.
type reader struct {
	ch   Channel
	slab []byte
	ids  map[string]string
}

const slabSize = 32 << 10

func (rd *reader) copyData(b []byte) []byte {
	if len(b) > cap(rd.slab)-len(rd.slab) {
		rd.slab = make([]byte, 0, max(slabSize, len(b)))
	}
	off := len(rd.slab)
	rd.slab = append(rd.slab, b...)
	return rd.slab[off:len(rd.slab):len(rd.slab)]
}

func (rd *reader) str(b []byte, known map[string]string) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := known[string(b)]; ok {
		return s
	}
	if (rd.ch.Kind == OneStation || rd.ch.Kind == OneUser) && string(b) == rd.ch.ID {
		return rd.ch.ID
	}
	if rd.ids == nil {
		rd.ids = map[string]string{}
	}
	if s, ok := rd.ids[string(b)]; ok {
		return s
	}
	s := string(b)
	rd.ids[s] = s
	return s
}

func (rd *reader) event(seq uint64, r *record) Event {
	return Event{
		Seq:       seq,
		Time:      time.Unix(0, r.ns).UTC(),
		Type:      rd.str(r.typ, knownTypes),
		StationID: rd.str(r.sid, nil),
		UserID:    rd.str(r.uid, nil),
		Data:      rd.copyData(r.data),
	}
}

// EventsAfter returns up to limit events of ch with since < seq ≤ L, in seq
// order, where L is LastSeq() when the call starts (limit ≤ 0 means no
// limit). Events committed later are not returned; they reach the commit
// listener, which is called for a commit after LastSeq includes it and
// before any Update or Append of that commit is answered, so a reader that
// subscribes to live events first and then calls EventsAfter misses nothing
// (it may see an event twice and should skip seqs it already has).
//
// If retention removed events of ch after since (since < FirstSeqOf(ch)-1),
// it returns ErrCompacted. If since ≥ L, including a since beyond the newest event (a
// client that saw a seq this log never had), it returns an empty slice and no
// error; callers that must tell those cases apart compare since with
// LastSeq(). Per-station and per-user reads seek their index and do not
// touch other channels' events; AllStations and Everything reads walk the
// log from since, skipping events of other channels.
func (s *Store) EventsAfter(ch Channel, since uint64, limit int) ([]Event, error) {
	if err := ch.validate(); err != nil {
		return nil, fmt.Errorf("store: events: %w", err)
	}
	last := s.lastSeq.Load() // before the tx begins: the snapshot holds all ≤ last
	if since >= last {
		return []Event{}, nil
	}
	var out []Event
	err := s.view(func(btx *bolt.Tx) error {
		// Compaction lowers firstSeq before it commits, so loading it after
		// the tx began is never too optimistic for this snapshot.
		if first := s.firstSeq.Load(); first > 0 && since < first-1 {
			return fmt.Errorf("store: events after %d (oldest retained %d): %w", since, first, ErrCompacted)
		}
		// The per-station cap removed events of this channel up to cut
		// (raised before its commit, like firstSeq).
		if cut := s.logc.cut(ch); since < cut {
			return fmt.Errorf("store: events after %d (the channel's events up to %d were removed): %w", since, cut, ErrCompacted)
		}
		n := last - since
		if limit > 0 && uint64(limit) < n {
			n = uint64(limit)
		}
		out = make([]Event, 0, min(n, 64))
		return readEvents(btx, ch, since, last, limit, func(ev Event) {
			out = append(out, ev)
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readEvents calls fn for up to limit events of ch with since < seq ≤ last.
func readEvents(btx *bolt.Tx, ch Channel, since, last uint64, limit int, fn func(Event)) error {
	rd := reader{ch: ch}
	evb := btx.Bucket(bucketEvents)
	var seekKey [8]byte
	binary.BigEndian.PutUint64(seekKey[:], since+1)
	n := 0
	emit := func(seq uint64, v []byte) error {
		r, ok := decodeRecord(v)
		if !ok {
			return fmt.Errorf("store: event %d: %w", seq, errCorrupt)
		}
		if !ch.matchesRecord(&r) {
			return nil
		}
		fn(rd.event(seq, &r))
		n++
		return nil
	}
	switch ch.Kind {
	case OneStation, OneUser:
		idx, epochs := btx.Bucket(bucketIdxUser), false
		if ch.Kind == OneStation {
			idx, epochs = btx.Bucket(bucketIdxStation), true
		}
		c, evc := idx.Cursor(), evb.Cursor() // one cursor for all lookups: no allocation per event
		// scan emits the entries under prefix from seek on; it reports
		// whether the read is complete (limit or last reached).
		scan := func(prefix, seek []byte) (bool, error) {
			for k, _ := c.Seek(seek); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				if limit > 0 && n >= limit {
					return true, nil
				}
				if len(k) != len(prefix)+8 {
					continue // cannot happen with valid ids; never misread
				}
				seqKey := k[len(prefix):]
				seq := binary.BigEndian.Uint64(seqKey)
				if seq > last {
					return true, nil
				}
				ek, v := evc.Seek(seqKey)
				if !bytes.Equal(ek, seqKey) {
					return false, fmt.Errorf("store: index entry for missing event %d: %w", seq, errCorrupt)
				}
				if err := emit(seq, v); err != nil {
					return false, err
				}
			}
			return limit > 0 && n >= limit, nil
		}
		if !epochs {
			seek := appendIndexKey(nil, ch.ID, since+1)
			_, err := scan(seek[:len(seek)-8], seek)
			return err
		}
		// One seek per epoch from since+1's to last's.
		buf := make([]byte, 0, 8+len(ch.ID)+9)
		from := since + 1
		for e := from >> indexEpochBits; e <= last>>indexEpochBits; e++ {
			seek := appendStationIndexKey(buf[:0], ch.ID, max(from, e<<indexEpochBits))
			done, err := scan(seek[:len(seek)-8], seek)
			if done || err != nil {
				return err
			}
		}
	default:
		c := evb.Cursor()
		for k, v := c.Seek(seekKey[:]); k != nil && (limit <= 0 || n < limit); k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("store: event key of %d bytes: %w", len(k), errCorrupt)
			}
			seq := binary.BigEndian.Uint64(k)
			if seq > last {
				break
			}
			if err := emit(seq, v); err != nil {
				return err
			}
		}
	}
	return nil
}

// eventsChunk is how many events Events reads per read transaction.
const eventsChunk = 512

// Events iterates over ch's events with seq > since in order, for long reads
// (replay, export) without holding them all in memory. It reads in chunks,
// one short read transaction each, up to the LastSeq() of when each chunk is
// read. An error (ErrCompacted if retention overtakes the reader) is yielded
// once, with a zero Event, and ends the iteration.
func (s *Store) Events(ch Channel, since uint64) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		for {
			evs, err := s.EventsAfter(ch, since, eventsChunk)
			if err != nil {
				yield(Event{}, err)
				return
			}
			for _, ev := range evs {
				if !yield(ev, nil) {
					return
				}
				since = ev.Seq
			}
			if len(evs) < eventsChunk {
				return
			}
		}
	}
}
