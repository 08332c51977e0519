package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/swapbridge/swapbridge/wire"
	bolt "go.etcd.io/bbolt"
)

// Tx is a transaction handed to Update or View fns. It must not be used after
// fn returns.
type Tx struct {
	btx      *bolt.Tx // nil once fn returned
	writable bool
	seq      *uint64 // the batch's seq counter (read-write only)
	events   []Event // appended by this fn
}

func (tx *Tx) check(write bool) error {
	if tx.btx == nil {
		return errTxDone
	}
	if write && !tx.writable {
		return errReadOnly
	}
	return nil
}

// maxTypeLen bounds an event type name (it is stored with a one-byte length).
const maxTypeLen = 255

// Append adds ev to the event log, assigning ev.Seq and building ev.Data.
// A zero ev.Time means now; ev.Time is normalised to UTC with nanosecond
// precision, as it will read back. ev.Fields must be a JSON object (or empty,
// meaning {}); ev.StationID and ev.UserID, when set, must be valid ids.
// Read-write transactions only.
func (tx *Tx) Append(ev *Event) error {
	return tx.AppendAt(ev, 0)
}

// AppendAt is Append with the seq chosen by the caller (a replica applying
// a log whose seqs were assigned elsewhere): seq must be above every seq
// in the log, and may skip values. A seq of 0 means the next one.
func (tx *Tx) AppendAt(ev *Event, seq uint64) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if ev.Type == "" || len(ev.Type) > maxTypeLen {
		return fmt.Errorf("store: append: event type must be 1..%d bytes", maxTypeLen)
	}
	if ev.StationID != "" {
		if err := wire.CheckID("station id", ev.StationID); err != nil {
			return fmt.Errorf("store: append %s: %w", ev.Type, err)
		}
	}
	if ev.UserID != "" {
		if err := wire.CheckID("user id", ev.UserID); err != nil {
			return fmt.Errorf("store: append %s: %w", ev.Type, err)
		}
	}
	fields := bytes.TrimSpace(ev.Fields)
	if len(fields) == 0 {
		fields = []byte("{}")
	}
	if len(fields) < 2 || fields[0] != '{' || fields[len(fields)-1] != '}' {
		return fmt.Errorf("store: append %s: fields must be a JSON object", ev.Type)
	}
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	ns := ev.Time.UnixNano()
	ev.Time = time.Unix(0, ns).UTC()

	switch {
	case seq == 0:
		seq = *tx.seq + 1
	case seq <= *tx.seq:
		return fmt.Errorf("store: append %s at seq %d: the log is at %d already", ev.Type, seq, *tx.seq)
	}
	ev.Seq = seq

	// One allocation holds the record header and the wire frame; ev.Data
	// points into it.
	hdr := recordHeaderLen(ev.Type, ev.StationID, ev.UserID)
	buf := make([]byte, hdr, hdr+len(ev.Type)+len(fields)+96) // frame overhead is under 80 bytes
	putRecordHeader(buf, ns, ev.Type, ev.StationID, ev.UserID)
	buf = wire.EncodeEvent(buf, ev.Type, seq, ev.Time, fields)
	ev.Data = buf[hdr:len(buf):len(buf)]

	// Keys: be64(seq), then the index keys, in one allocation.
	keys := make([]byte, 8, 8+len(ev.StationID)+len(ev.UserID)+26)
	binary.BigEndian.PutUint64(keys, seq)
	seqKey := keys[:8:8]
	if err := eventsBucket(tx.btx).Put(seqKey, buf); err != nil {
		return fmt.Errorf("store: append event %d: %w", seq, err)
	}
	if ev.StationID != "" {
		off := len(keys)
		keys = appendStationIndexKey(keys, ev.StationID, seq)
		if err := tx.btx.Bucket(bucketIdxStation).Put(keys[off:], nil); err != nil {
			return fmt.Errorf("store: append event %d: station index: %w", seq, err)
		}
	}
	if ev.UserID != "" {
		off := len(keys)
		keys = appendIndexKey(keys, ev.UserID, seq)
		if err := tx.btx.Bucket(bucketIdxUser).Put(keys[off:], nil); err != nil {
			return fmt.Errorf("store: append event %d: user index: %w", seq, err)
		}
	}
	*tx.seq = seq
	stored := *ev
	stored.Fields = nil // ev.Fields stays: fn may run again
	tx.events = append(tx.events, stored)
	return nil
}

// eventsBucket returns the event log bucket, filled densely since keys are
// only ever appended.
func eventsBucket(btx *bolt.Tx) *bolt.Bucket {
	b := btx.Bucket(bucketEvents)
	b.FillPercent = 1.0
	return b
}

// appendIndexKey appends id 0x00 be64(seq): a user index key.
func appendIndexKey(dst []byte, id string, seq uint64) []byte {
	dst = append(dst, id...)
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, seq)
}

// The station index is ordered by epoch (seq >> indexEpochBits) first, then
// station, then seq: be64(epoch) sid 0x00 be64(seq). New keys all fall into
// the newest epoch's few pages, so a commit of thousands of telemetry
// updates from thousands of stations rewrites a few dozen index pages
// instead of one page per station (the tail of each station's range, when
// keys were sid-first). A station's read seeks once per epoch it spans.
const indexEpochBits = 12

// appendStationIndexKey appends be64(seq>>indexEpochBits) id 0x00 be64(seq).
func appendStationIndexKey(dst []byte, id string, seq uint64) []byte {
	dst = binary.BigEndian.AppendUint64(dst, seq>>indexEpochBits)
	return appendIndexKey(dst, id, seq)
}

// migrateStationIndex moves the entries of the sid-first station index of
// earlier versions into the epoch-first one and drops the old bucket, in
// one transaction. The new keys are put in their order (a bolt node takes
// in-order keys at its end; in the old order every put would move half of
// a node of up to a million entries) and pages are filled, since old
// epochs never change again.
func migrateStationIndex(btx *bolt.Tx) error {
	old := btx.Bucket(bucketIdxStationOld)
	if old == nil {
		return nil
	}
	var keys [][]byte
	err := old.ForEach(func(k, _ []byte) error {
		i := bytes.IndexByte(k, 0)
		if i < 1 || len(k) != i+9 {
			return fmt.Errorf("migrate station index: key of %d bytes: %w", len(k), errCorrupt)
		}
		// bolt keeps a key until the commit: one allocation each.
		keys = append(keys, appendStationIndexKey(make([]byte, 0, len(k)+8), string(k[:i]), binary.BigEndian.Uint64(k[i+1:])))
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(keys, bytes.Compare)
	idx := btx.Bucket(bucketIdxStation)
	idx.FillPercent = 1.0
	for _, k := range keys {
		if err := idx.Put(k, nil); err != nil {
			return fmt.Errorf("migrate station index: %w", err)
		}
	}
	return btx.DeleteBucket(bucketIdxStationOld)
}

func recBucket(kind Kind) []byte { return []byte(recBucketPrefix + string(kind)) }

func (tx *Tx) recordBucket(kind Kind, create bool) (*bolt.Bucket, error) {
	if kind == "" {
		return nil, fmt.Errorf("store: empty record kind")
	}
	name := recBucket(kind)
	if b := tx.btx.Bucket(name); b != nil {
		return b, nil
	}
	if !create {
		return nil, nil
	}
	b, err := tx.btx.CreateBucket(name)
	if err != nil {
		return nil, fmt.Errorf("store: create bucket for %s: %w", kind, err)
	}
	return b, nil
}

// Get returns the value stored under key in kind's bucket, or ErrNotFound.
// The slice is valid only during the transaction.
func (tx *Tx) Get(kind Kind, key string) ([]byte, error) {
	if err := tx.check(false); err != nil {
		return nil, err
	}
	b, err := tx.recordBucket(kind, false)
	if err != nil {
		return nil, err
	}
	if b == nil {
		return nil, fmt.Errorf("store: %s %q: %w", kind, key, ErrNotFound)
	}
	v := b.Get([]byte(key))
	if v == nil {
		return nil, fmt.Errorf("store: %s %q: %w", kind, key, ErrNotFound)
	}
	return v, nil
}

// Put stores value under key. The store copies value. Keys must be
// non-empty and at most 32 KiB.
func (tx *Tx) Put(kind Kind, key string, value []byte) error {
	if err := tx.check(true); err != nil {
		return err
	}
	b, err := tx.recordBucket(kind, true)
	if err != nil {
		return err
	}
	v := make([]byte, len(value))
	copy(v, value)
	if err := b.Put([]byte(key), v); err != nil {
		return fmt.Errorf("store: put %s %q: %w", kind, key, err)
	}
	return nil
}

// Delete removes key; missing keys are not an error.
func (tx *Tx) Delete(kind Kind, key string) error {
	if err := tx.check(true); err != nil {
		return err
	}
	b, err := tx.recordBucket(kind, false)
	if err != nil || b == nil {
		return err
	}
	if err := b.Delete([]byte(key)); err != nil {
		return fmt.Errorf("store: delete %s %q: %w", kind, key, err)
	}
	return nil
}

// Scan calls fn for every key with the prefix, in key order, until fn returns
// false. Values are valid only during the call; fn must not write to the same
// kind during the scan.
func (tx *Tx) Scan(kind Kind, prefix string, fn func(key string, value []byte) bool) error {
	if err := tx.check(false); err != nil {
		return err
	}
	b, err := tx.recordBucket(kind, false)
	if err != nil || b == nil {
		return err
	}
	p := []byte(prefix)
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if !fn(string(k), v) {
			return nil
		}
	}
	return nil
}

// Station returns the provisioned station or ErrNotFound.
func (tx *Tx) Station(id string) (Station, error) {
	if err := tx.check(false); err != nil {
		return Station{}, err
	}
	return getStation(tx.btx, id)
}

// User returns the user or ErrNotFound.
func (tx *Tx) User(id string) (User, error) {
	if err := tx.check(false); err != nil {
		return User{}, err
	}
	return getUser(tx.btx, id)
}
