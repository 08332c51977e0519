package store

import (
	"errors"
	"fmt"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	bolt "go.etcd.io/bbolt"
)

// The bridge's commit log on bbolt: Append, Record, Records, StationInfo,
// StationInfos and UserExists make *Store a bridge.Log and a
// bridge.Catalog.
//
// A commit is one group-committed request (UpdateAsync): commits are
// durable in the order appended, many share one fsync. The per-station
// fence lives on the committer goroutine: a failed commit of a station
// marks it, and every later commit of the station fails in its
// transaction, until one carries commitlog.Commit.Reopen.

// errFenced fails a station's commit queued after one of its commits
// failed.
var errFenced = errors.New("store: an earlier commit of the station failed")

// Append queues c and returns at once; done is called exactly once, on the
// committer goroutine, once c is durable (nil) or has failed. If Append
// returns an error (ErrClosed), done is never called. c must not change
// until done is called.
func (s *Store) Append(c *commitlog.Commit, done func(error)) error {
	fn := func(tx *Tx) error {
		if c.Station != "" {
			if c.Reopen {
				delete(s.fenced, c.Station)
			} else if s.fenced[c.Station] {
				return fmt.Errorf("store: commit of station %s: %w", c.Station, errFenced)
			}
		}
		for _, r := range c.Records {
			var err error
			if r.Value == nil {
				err = tx.Delete(Kind(r.Kind), r.Key)
			} else {
				err = tx.Put(Kind(r.Kind), r.Key, r.Value)
			}
			if err != nil {
				return err
			}
		}
		for i := range c.Events {
			e := &c.Events[i]
			ev := Event{Type: e.Type, Time: e.Time, StationID: e.StationID, UserID: e.UserID, Fields: e.Fields}
			if err := tx.Append(&ev); err != nil {
				return err
			}
		}
		if c.RemoveStation {
			if err := tx.DeleteStation(c.Station); err != nil {
				return notFound(err)
			}
		}
		return nil
	}
	return s.UpdateAsync(fn, func(_ []Event, err error) {
		if err != nil && c.Station != "" {
			s.fenced[c.Station] = true
		}
		done(err)
	})
}

// notFound makes an ErrNotFound of the store match commitlog.ErrNotFound
// too.
func notFound(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w (%w)", err, commitlog.ErrNotFound)
	}
	return err
}

// Record returns a copy of the committed record, or an error matching
// ErrNotFound and commitlog.ErrNotFound.
func (s *Store) Record(kind commitlog.Kind, key string) ([]byte, error) {
	var out []byte
	err := s.View(func(tx *Tx) error {
		v, err := tx.Get(Kind(kind), key)
		if err != nil {
			return err
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, notFound(err)
}

// Records calls fn for every committed record of kind whose key starts
// with prefix, in key order, until fn returns false; value is valid only
// during the call. fn must not write to the store.
func (s *Store) Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error {
	return s.View(func(tx *Tx) error { return tx.Scan(Kind(kind), prefix, fn) })
}

// Load calls fn with tx-backed reads of one consistent snapshot (a bbolt
// read transaction): Tx is a bridge.Reader. With one writer there is no
// fence to set; sids is not needed.
func (s *Store) Load(sids []string, fn func(r commitlog.Reader) error) error {
	return s.View(func(tx *Tx) error { return fn(tx) })
}

// Record returns a copy of the record (read-only or read-write
// transactions), or an error matching ErrNotFound and
// commitlog.ErrNotFound.
func (tx *Tx) Record(kind commitlog.Kind, key string) ([]byte, error) {
	v, err := tx.Get(Kind(kind), key)
	if err != nil {
		return nil, notFound(err)
	}
	return append([]byte(nil), v...), nil
}

// Records is Scan for a commitlog kind.
func (tx *Tx) Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error {
	return tx.Scan(Kind(kind), prefix, fn)
}

// StationInfo returns a provisioned station's catalogue entry.
func (s *Store) StationInfo(sid string) (commitlog.StationInfo, error) {
	st, err := s.Station(sid)
	if err != nil {
		return commitlog.StationInfo{}, notFound(err)
	}
	return infoOf(st), nil
}

// StationInfos returns every provisioned station's catalogue entry,
// ordered by id.
func (s *Store) StationInfos() ([]commitlog.StationInfo, error) {
	all, err := s.Stations()
	if err != nil {
		return nil, err
	}
	out := make([]commitlog.StationInfo, len(all))
	for i, st := range all {
		out[i] = infoOf(st)
	}
	return out, nil
}

func infoOf(st Station) commitlog.StationInfo {
	return commitlog.StationInfo{ID: st.ID, Name: st.Name, Slots: st.Slots, Lat: st.Lat, Lon: st.Lon}
}

// UserExists reports whether the user exists.
func (s *Store) UserExists(uid string) (bool, error) {
	err := s.view(func(btx *bolt.Tx) error {
		_, err := getUser(btx, uid)
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
