package stationagent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/swapbridge/swapbridge/wire"
)

// ErrDataDirLocked is returned by Run when another agent holds the data
// directory's database.
var ErrDataDirLocked = errors.New("data dir locked by another stationagent")

// StateFile is the name of the agent's bbolt file in its data directory.
const StateFile = "stationagent.db"

var (
	bktMeta     = []byte("meta")
	bktOutbox   = []byte("outbox")
	bktCmds     = []byte("cmds")
	bktCmdTime  = []byte("cmd_time")
	bktReserve  = []byte("reservations")
	bktJournal  = []byte("journal")
	bktAvail    = []byte("availability")
	keyBootCnt  = []byte("boot_count")
	keyOutboxN  = []byte("outbox_n")
	keyCmdN     = []byte("cmd_n")
	keyJournalN = []byte("journal_n")
	journalKeep = 1000
)

// Outbox record kinds (first byte of a record).
const (
	recTelemetry byte = 't'
	recAck       byte = 'a'
)

// state is the agent's durable state in one bbolt file. Every update is
// fsync'd before it returns.
type state struct {
	db *bolt.DB
}

func openState(dir string) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	path := filepath.Join(dir, StateFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 500 * time.Millisecond})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s", ErrDataDirLocked, path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bktMeta, bktOutbox, bktCmds, bktCmdTime, bktReserve, bktJournal, bktAvail} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	return &state{db: db}, nil
}

func (s *state) close() error { return s.db.Close() }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// nextBoot increments and returns the persisted boot counter.
func (s *state) nextBoot() (uint64, error) {
	var n uint64
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktMeta)
		if v := b.Get(keyBootCnt); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		n++
		return b.Put(keyBootCnt, u64(n))
	})
	return n, err
}

// counter adds delta to a counter in the meta bucket and returns the new
// value. (Bucket.Stats does not see a write transaction's own changes.)
func counter(tx *bolt.Tx, key []byte, delta int) (int, error) {
	b := tx.Bucket(bktMeta)
	var n int64
	if v := b.Get(key); len(v) == 8 {
		n = int64(binary.BigEndian.Uint64(v))
	}
	n += int64(delta)
	if n < 0 {
		n = 0
	}
	return int(n), b.Put(key, u64(uint64(n)))
}

type boltTx = bolt.Tx

// outboxRec is one queued message.
type outboxRec struct {
	key     uint64
	kind    byte
	seq     uint64 // telemetry only
	payload []byte
}

func encodeRec(kind byte, seq uint64, payload []byte) []byte {
	v := make([]byte, 9+len(payload))
	v[0] = kind
	binary.BigEndian.PutUint64(v[1:9], seq)
	copy(v[9:], payload)
	return v
}

func decodeRec(k, v []byte) (outboxRec, bool) {
	if len(k) != 8 || len(v) < 9 {
		return outboxRec{}, false
	}
	return outboxRec{key: binary.BigEndian.Uint64(k), kind: v[0], seq: binary.BigEndian.Uint64(v[1:9]), payload: v[9:]}, true
}

// putOutbox appends a record in tx.
func putOutbox(tx *bolt.Tx, kind byte, seq uint64, payload []byte) error {
	b := tx.Bucket(bktOutbox)
	k, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(u64(k), encodeRec(kind, seq, payload)); err != nil {
		return err
	}
	_, err = counter(tx, keyOutboxN, 1)
	return err
}

// enqueueTelemetry appends one telemetry message. When the outbox then holds
// more than limit records, compact is called to build a full snapshot and
// every queued telemetry record is replaced by it; compacted reports that.
func (s *state) enqueueTelemetry(seq uint64, payload []byte, limit int, compact func() (uint64, []byte, error)) (compacted bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if err := putOutbox(tx, recTelemetry, seq, payload); err != nil {
			return err
		}
		b := tx.Bucket(bktOutbox)
		if n, _ := counter(tx, keyOutboxN, 0); n <= limit {
			return nil
		}
		var del [][]byte
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(v) > 0 && v[0] == recTelemetry {
				del = append(del, append([]byte(nil), k...))
			}
		}
		for _, k := range del {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		if _, err := counter(tx, keyOutboxN, -len(del)); err != nil {
			return err
		}
		snapSeq, snap, err := compact()
		if err != nil {
			return err
		}
		compacted = true
		return putOutbox(tx, recTelemetry, snapSeq, snap)
	})
	return compacted, err
}

// outboxAfter returns up to n records with keys greater than after, in order.
func (s *state) outboxAfter(after uint64, n int) ([]outboxRec, error) {
	var out []outboxRec
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bktOutbox).Cursor()
		for k, v := c.Seek(u64(after + 1)); k != nil && len(out) < n; k, v = c.Next() {
			if r, ok := decodeRec(k, v); ok {
				r.payload = append([]byte(nil), r.payload...)
				out = append(out, r)
			}
		}
		return nil
	})
	return out, err
}

// deleteOutbox removes acknowledged records.
func (s *state) deleteOutbox(keys ...uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktOutbox)
		n := 0
		for _, k := range keys {
			if b.Get(u64(k)) == nil {
				continue // already compacted away
			}
			if err := b.Delete(u64(k)); err != nil {
				return err
			}
			n++
		}
		_, err := counter(tx, keyOutboxN, -n)
		return err
	})
}

func (s *state) outboxDepth() int {
	n := 0
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bktMeta).Get(keyOutboxN); len(v) == 8 {
			n = int(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return n
}

// cmdRecord is the stored outcome of a command id.
type cmdRecord struct {
	Done bool      `json:"done"`
	Ack  wire.Ack  `json:"ack"`
	TS   time.Time `json:"ts"`
}

func (s *state) cmdResult(id string) (cmdRecord, bool, error) {
	var rec cmdRecord
	var found bool
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bktCmds).Get([]byte(id))
		if v == nil {
			return nil
		}
		found = true
		return json.Unmarshal(v, &rec)
	})
	return rec, found, err
}

// beginCmd records that id is being executed, before the driver acts, so a
// crash in between never leads to a second execution.
func (s *state) beginCmd(id string, now time.Time) error {
	rec, _ := json.Marshal(cmdRecord{TS: now, Ack: wire.Ack{ID: id}})
	return s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bktCmds).Put([]byte(id), rec); err != nil {
			return err
		}
		if _, err := counter(tx, keyCmdN, 1); err != nil {
			return err
		}
		return tx.Bucket(bktCmdTime).Put(append(u64(uint64(now.UnixNano())), id...), nil)
	})
}

// finishCmd stores the command's ack, queues it in the outbox and applies
// fn (reservation changes) in one transaction, then prunes the history to
// keep newest ids not older than maxAge.
func (s *state) finishCmd(ack wire.Ack, now time.Time, payload []byte, keep int, maxAge time.Duration, fn func(tx *bolt.Tx) error) error {
	rec, _ := json.Marshal(cmdRecord{Done: true, TS: now, Ack: ack})
	return s.db.Update(func(tx *bolt.Tx) error {
		if fn != nil {
			if err := fn(tx); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bktCmds).Put([]byte(ack.ID), rec); err != nil {
			return err
		}
		if err := putOutbox(tx, recAck, 0, payload); err != nil {
			return err
		}
		return pruneCmds(tx, now, keep, maxAge)
	})
}

// queueAck queues an ack (for a repeated id) without touching the history.
func (s *state) queueAck(payload []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putOutbox(tx, recAck, 0, payload) })
}

func pruneCmds(tx *bolt.Tx, now time.Time, keep int, maxAge time.Duration) error {
	idx := tx.Bucket(bktCmdTime)
	cmds := tx.Bucket(bktCmds)
	n, err := counter(tx, keyCmdN, 0)
	if err != nil {
		return err
	}
	cutoff := uint64(now.Add(-maxAge).UnixNano())
	c := idx.Cursor()
	for k, _ := c.First(); len(k) >= 8; k, _ = c.First() {
		if n <= keep && binary.BigEndian.Uint64(k[:8]) >= cutoff {
			break
		}
		id := append([]byte(nil), k[8:]...)
		if err := idx.Delete(k); err != nil {
			return err
		}
		if err := cmds.Delete(id); err != nil {
			return err
		}
		n--
	}
	_, err = counter(tx, keyCmdN, n-mustCount(tx, keyCmdN))
	return err
}

func mustCount(tx *bolt.Tx, key []byte) int {
	n, _ := counter(tx, key, 0)
	return n
}

// Reservation is a slot held for a booking.
type Reservation struct {
	Slot      int       `json:"slot"`
	BookingID string    `json:"booking_id"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

func putReservation(tx *bolt.Tx, r Reservation) error {
	v, _ := json.Marshal(r)
	return tx.Bucket(bktReserve).Put(u64(uint64(r.Slot)), v)
}

func deleteReservation(tx *bolt.Tx, slot int) error {
	return tx.Bucket(bktReserve).Delete(u64(uint64(slot)))
}

func (s *state) reservations() (map[int]Reservation, error) {
	out := map[int]Reservation{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktReserve).ForEach(func(k, v []byte) error {
			var r Reservation
			if json.Unmarshal(v, &r) == nil && r.Slot > 0 {
				out[r.Slot] = r
			}
			return nil
		})
	})
	return out, err
}

func (s *state) update(fn func(tx *bolt.Tx) error) error { return s.db.Update(fn) }

// JournalEntry records a technician's local action.
type JournalEntry struct {
	TS     time.Time `json:"ts"`
	Action string    `json:"action"`
	Slot   int       `json:"slot"`
	Reason string    `json:"reason"`
	Error  string    `json:"error,omitempty"`
}

func (s *state) journal(e JournalEntry) error {
	v, _ := json.Marshal(e)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bktJournal)
		k, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(u64(k), v); err != nil {
			return err
		}
		n, err := counter(tx, keyJournalN, 1)
		if err != nil || n <= journalKeep {
			return err
		}
		if fk, _ := b.Cursor().First(); fk != nil {
			if err := b.Delete(fk); err != nil {
				return err
			}
		}
		_, err = counter(tx, keyJournalN, -1)
		return err
	})
}

// putAvailability stores the last set_availability for a slot (0: station),
// re-applied to the driver on start.
func putAvailability(tx *bolt.Tx, slot int, available bool) error {
	v := []byte{0}
	if available {
		v[0] = 1
	}
	b := tx.Bucket(bktAvail)
	if slot == 0 {
		// The station-level setting overrides earlier slot-level ones.
		var keys [][]byte
		_ = b.ForEach(func(k, _ []byte) error { keys = append(keys, append([]byte(nil), k...)); return nil })
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return b.Put(u64(uint64(slot)), v)
}

// availability returns the stored availability per slot (0: station).
func (s *state) availability() (map[int]bool, error) {
	out := map[int]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bktAvail).ForEach(func(k, v []byte) error {
			if len(k) == 8 && len(v) == 1 {
				out[int(binary.BigEndian.Uint64(k))] = v[0] == 1
			}
			return nil
		})
	})
	return out, err
}
