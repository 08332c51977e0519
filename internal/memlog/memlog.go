// Package memlog is a commit log in memory: the second implementation of
// bridge.Log and bridge.Catalog (the first is store, on bbolt). It keeps
// the same promises, durability aside: a commit is applied whole or not at
// all, commits are answered in the order appended from one committer
// goroutine, each commit gets its events' seqs from one global counter, and
// a failed commit of a station fences the station's later commits until
// one with Reopen. Nothing survives Close.
//
// It is meant for tests (of the bridge against both logs) and as the
// pattern a replicated log follows.
package memlog

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/internal/commitlog"
)

// ErrClosed: the log was closed.
var ErrClosed = errors.New("memlog: closed")

// Event is a committed event.
type Event struct {
	Seq uint64
	commitlog.Event
}

type request struct {
	c    *commitlog.Commit
	done func(error)
}

// Log is an in-memory commit log. Create it with New; Close it.
type Log struct {
	mu       sync.Mutex
	cond     *sync.Cond
	queue    []request
	closed   bool
	records  map[commitlog.Kind]map[string][]byte
	stations map[string]commitlog.StationInfo
	users    map[string]bool
	events   []Event
	seq      uint64
	fenced   map[string]bool

	wg        sync.WaitGroup
	closeOnce sync.Once
}

// New returns an empty log with its committer running.
func New() *Log {
	l := &Log{
		records:  map[commitlog.Kind]map[string][]byte{},
		stations: map[string]commitlog.StationInfo{},
		users:    map[string]bool{},
		fenced:   map[string]bool{},
	}
	l.cond = sync.NewCond(&l.mu)
	l.wg.Add(1)
	go l.commitLoop()
	return l
}

// Close stops the committer; commits still queued get ErrClosed. It is
// idempotent.
func (l *Log) Close() error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		l.cond.Signal()
		l.mu.Unlock()
		l.wg.Wait()
	})
	return nil
}

// AddStation puts a station into the catalogue.
func (l *Log) AddStation(info commitlog.StationInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stations[info.ID] = info
}

// AddUser puts a user into the catalogue.
func (l *Log) AddUser(uid string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.users[uid] = true
}

// Append queues c; done is called exactly once, on the committer
// goroutine, once c is applied (nil) or refused. After Close it returns
// ErrClosed and done is never called.
func (l *Log) Append(c *commitlog.Commit, done func(error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	l.queue = append(l.queue, request{c: c, done: done})
	if len(l.queue) == 1 {
		l.cond.Signal()
	}
	return nil
}

// commitLoop answers the queued commits in order, a batch at a time.
func (l *Log) commitLoop() {
	defer l.wg.Done()
	for {
		l.mu.Lock()
		for len(l.queue) == 0 && !l.closed {
			l.cond.Wait()
		}
		batch := l.queue
		l.queue = nil
		if l.closed {
			l.mu.Unlock()
			for _, r := range batch {
				r.done(ErrClosed)
			}
			return
		}
		errs := make([]error, len(batch))
		for i, r := range batch {
			errs[i] = l.apply(r.c)
		}
		l.mu.Unlock()
		for i, r := range batch {
			r.done(errs[i])
		}
	}
}

// apply checks c whole, then applies it; l.mu is held.
func (l *Log) apply(c *commitlog.Commit) (err error) {
	if c.Station != "" {
		defer func() {
			if err != nil {
				l.fenced[c.Station] = true
			}
		}()
		if c.Reopen {
			delete(l.fenced, c.Station)
		} else if l.fenced[c.Station] {
			return fmt.Errorf("memlog: commit of station %s: an earlier commit of the station failed", c.Station)
		}
	}
	for _, r := range c.Records {
		if r.Kind == "" || r.Key == "" {
			return fmt.Errorf("memlog: record %q of kind %q: empty kind or key", r.Key, r.Kind)
		}
	}
	for _, e := range c.Events {
		if e.Type == "" || (e.StationID == "" && e.UserID == "") {
			return fmt.Errorf("memlog: event %q: no type or no channel", e.Type)
		}
	}
	if c.RemoveStation {
		if _, ok := l.stations[c.Station]; !ok {
			return fmt.Errorf("memlog: station %s: %w", c.Station, commitlog.ErrNotFound)
		}
	}
	for _, r := range c.Records {
		m := l.records[r.Kind]
		if m == nil {
			m = map[string][]byte{}
			l.records[r.Kind] = m
		}
		if r.Value == nil {
			delete(m, r.Key)
		} else {
			m[r.Key] = append([]byte(nil), r.Value...)
		}
	}
	for _, e := range c.Events {
		l.seq++
		e.Fields = append([]byte(nil), e.Fields...)
		if e.Time.IsZero() {
			e.Time = time.Now()
		}
		l.events = append(l.events, Event{Seq: l.seq, Event: e})
	}
	if c.RemoveStation {
		delete(l.stations, c.Station)
	}
	return nil
}

// Load calls fn with a reader of the log as it is, held still (no commit
// is applied) until fn returns. fn must not call into the log.
func (l *Log) Load(_ []string, fn func(commitlog.Reader) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fn(snapshot{l})
}

// snapshot reads l with l.mu held.
type snapshot struct{ l *Log }

func (s snapshot) Record(kind commitlog.Kind, key string) ([]byte, error) {
	return s.l.record(kind, key)
}

func (s snapshot) Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error {
	keys, vals := s.l.scan(kind, prefix)
	for _, k := range keys {
		if !fn(k, vals[k]) {
			return nil
		}
	}
	return nil
}

// Record returns a copy of a committed record, or commitlog.ErrNotFound.
func (l *Log) Record(kind commitlog.Kind, key string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.record(kind, key)
}

// record is Record with l.mu held.
func (l *Log) record(kind commitlog.Kind, key string) ([]byte, error) {
	v, ok := l.records[kind][key]
	if !ok {
		return nil, fmt.Errorf("memlog: %s %q: %w", kind, key, commitlog.ErrNotFound)
	}
	return append([]byte(nil), v...), nil
}

// Records calls fn for the committed records of kind whose key starts with
// prefix, in key order, until fn returns false. It reads a snapshot: fn may
// call into the log.
func (l *Log) Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error {
	l.mu.Lock()
	keys, vals := l.scan(kind, prefix)
	l.mu.Unlock()
	for _, k := range keys {
		if !fn(k, vals[k]) {
			return nil
		}
	}
	return nil
}

// scan returns the keys of kind with prefix, sorted, and their values;
// l.mu is held.
func (l *Log) scan(kind commitlog.Kind, prefix string) ([]string, map[string][]byte) {
	var keys []string
	vals := map[string][]byte{}
	for k, v := range l.records[kind] {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
			vals[k] = v
		}
	}
	sort.Strings(keys)
	return keys, vals
}

// StationInfo returns a station's catalogue entry or commitlog.ErrNotFound.
func (l *Log) StationInfo(sid string) (commitlog.StationInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	info, ok := l.stations[sid]
	if !ok {
		return info, fmt.Errorf("memlog: station %s: %w", sid, commitlog.ErrNotFound)
	}
	return info, nil
}

// StationInfos returns the catalogue, ordered by id.
func (l *Log) StationInfos() ([]commitlog.StationInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]commitlog.StationInfo, 0, len(l.stations))
	for _, info := range l.stations {
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// UserExists reports whether the user is in the catalogue.
func (l *Log) UserExists(uid string) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.users[uid], nil
}

// Events returns a copy of the committed events with seq > since, in seq
// order.
func (l *Log) Events(since uint64) []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := sort.Search(len(l.events), func(i int) bool { return l.events[i].Seq > since })
	return append([]Event(nil), l.events[i:]...)
}
