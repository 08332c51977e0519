// Package jslog is the bridge's commit log on a NATS JetStream stream: the
// log of cluster mode (docs/CLUSTER.md), a bridge.Log and bridge.Catalog
// like store (bbolt) and internal/memlog.
//
// Writes. A station's commits go out as commit groups, one stream message
// on <subject>.<sid> each: while one group of the station is in flight, the
// commits appended meanwhile gather into the next, which is published once
// the previous one is acknowledged. Every group names the stream sequence
// of the station's group before it (Nats-Expected-Last-Subject-Sequence),
// so the stream leader refuses a group that does not follow the last one
// written for the station: a writer whose view of the station is stale (it
// lost a group, another node took the station over, it was paused) cannot
// write. A commit is answered (done) once the stream acknowledged its group,
// that is once a quorum of the stream's replicas stored it; with the node
// settings swapd requires (sync_interval: always), fsync'ed.
//
// Reads. Every node applies the whole stream, in order, to a local view: a
// store.Store (bbolt) written only by this package, with the records, the
// events under their seqs (stream sequence × 4096 + index in the group) and
// the catalogue. Record and Records read the view once it has applied what
// this node's commits made durable; Load reads one consistent snapshot of
// it and fences each loaded station at the last group the snapshot holds
// for it. The view's commit listener is the node's event feed (WebSocket
// hub, webhooks): the same events, seqs and order on every node.
package jslog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/store"
)

// Defaults.
const (
	DefaultStream  = "SWAP"
	DefaultSubject = "swap.c"
	// SeqsPerGroup: an event's seq is its group's stream sequence times
	// this, plus its index in the group; a group holds at most this many
	// events.
	SeqsPerGroup = 4096
	// maxGroupBytes bounds a group's message (NATS's default max_payload
	// is 1 MiB); one commit larger than this is refused.
	maxGroupBytes = 768 << 10
	// maxApplying bounds the groups handed to the view and not yet applied.
	maxApplying = 4096
)

// Header names.
const (
	hdrWriter = "Swap-Writer" // node/incarnation that wrote the group
)

var (
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("jslog: closed")
	// ErrFenced: an earlier commit of the station failed (or another
	// writer took the station over); the station's commits fail until it
	// is reloaded and a Reopen commit is accepted.
	ErrFenced = errors.New("jslog: the station's earlier commit failed, or another node took the station over")
	// ErrTakenOver: the stream refused a group because another writer
	// wrote for the station after the group's base.
	ErrTakenOver = errors.New("jslog: another writer committed for the station")
	// ErrViewBehind: the local view did not catch up in time.
	ErrViewBehind = errors.New("jslog: the local view is behind the stream")
)

// The view's bookkeeping records (store kinds).
const (
	kindMeta    store.Kind = "jslog_meta"    // key "applied": be64 stream sequence
	kindStation store.Kind = "jslog_station" // key sid: be64 stream sequence of its last group
	keyApplied             = "applied"
)

// Config configures a Log.
type Config struct {
	// Conn is the NATS connection (to the node's embedded server or an
	// external cluster); required. The Log does not close it.
	Conn *nats.Conn
	// View is the local view the stream is applied to; required. Nothing
	// else may write it while the Log is open (the admin API's catalogue
	// writes aside, until the catalogue is replicated).
	View *store.Store
	// Node names this node (swapd's --node-id); required.
	Node string
	// Stream and Subject: DefaultStream and DefaultSubject when empty.
	Stream, Subject string
	// Replicas of the stream; 0 means 1. A cluster uses 3.
	Replicas int
	// MaxAge and MaxMsgs: the stream's retention; 0 means unlimited.
	MaxAge  time.Duration
	MaxMsgs int64
	// PublishTimeout bounds the wait for a group's acknowledgement (the
	// commits fail after it); 0 means 10 s. The group may still have been
	// stored: the station is fenced, and its reload reads what was.
	PublishTimeout time.Duration
	// ReadWait bounds how long a read waits for the view to catch up; 0
	// means 10 s.
	ReadWait time.Duration
	// OnTakeover, if set, is called (on the feed's goroutine; it must not
	// block) when the view applies a group of a station this log wrote
	// for, written by another writer: the station is fenced here.
	OnTakeover func(sid string)
	// Logger; nil discards.
	Logger *slog.Logger
}

// Log is a bridge.Log and bridge.Catalog on JetStream. Create it with Open.
type Log struct {
	cfg    Config
	lg     *slog.Logger
	writer string // node/incarnation
	js     jetstream.JetStream
	stream jetstream.Stream
	view   *store.Store
	cons   jetstream.ConsumeContext

	mu       sync.Mutex
	stations map[string]*station
	closed   bool
	msgID    uint64
	acked    uint64 // highest stream sequence this log's groups were acknowledged at

	pmu     sync.Mutex
	pending map[*nats.Msg]*group

	applied  atomic.Uint64 // last stream sequence applied to the view
	amu      sync.Mutex
	advanced chan struct{} // closed and replaced when applied advances
	applyErr atomic.Pointer[error]
	applying chan struct{} // semaphore: groups handed to the view

	inflight sync.WaitGroup // groups published and not answered
}

// station is the write side of one station.
type station struct {
	sid string
	// base: the stream sequence of the station's last group, as this log
	// knows it; its next group names it. loadBase is what the last Load
	// found, taken by the next Reopen.
	base     uint64
	loadBase uint64
	loaded   bool
	wrote    bool // this log wrote for the station since it was loaded
	fenced   bool
	flying   *group
	queue    []*group // waiting behind flying, in order
}

// group is one stream message of a station: its commits' answers.
type group struct {
	st      *station
	body    []byte
	dones   []func(error)
	events  int
	reopen  bool
	subject string
}

// Open creates (or updates) the stream, starts applying it to the view from
// where the view left off, and returns once the view has caught up with the
// stream as it was at Open.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Conn == nil || cfg.View == nil || cfg.Node == "" {
		return nil, errors.New("jslog: Conn, View and Node are required")
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.Subject == "" {
		cfg.Subject = DefaultSubject
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.PublishTimeout == 0 {
		cfg.PublishTimeout = 10 * time.Second
	}
	if cfg.ReadWait == 0 {
		cfg.ReadWait = 10 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	l := &Log{
		cfg:      cfg,
		lg:       lg.With("part", "jslog"),
		writer:   cfg.Node + "/" + nuid.Next(),
		view:     cfg.View,
		stations: map[string]*station{},
		pending:  map[*nats.Msg]*group{},
		advanced: make(chan struct{}),
		applying: make(chan struct{}, maxApplying),
	}
	js, err := jetstream.New(cfg.Conn,
		jetstream.WithPublishAsyncMaxPending(1<<20),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) { l.answered(m, ack, nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { l.answered(m, nil, err) }),
	)
	if err != nil {
		return nil, fmt.Errorf("jslog: %w", err)
	}
	l.js = js
	scfg := jetstream.StreamConfig{
		Name:        cfg.Stream,
		Subjects:    []string{cfg.Subject + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		MaxMsgs:     cfg.MaxMsgs,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
		AllowDirect: true,
	}
	if scfg.MaxMsgs == 0 {
		scfg.MaxMsgs = -1
	}
	l.stream, err = js.CreateOrUpdateStream(ctx, scfg)
	if err != nil {
		return nil, fmt.Errorf("jslog: stream %s: %w", cfg.Stream, err)
	}

	applied, err := l.viewApplied()
	if err != nil {
		return nil, err
	}
	l.applied.Store(applied)
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: []string{cfg.Subject + ".>"}}
	if applied > 0 {
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = applied + 1
	}
	cons, err := l.stream.OrderedConsumer(ctx, occ)
	if err != nil {
		return nil, fmt.Errorf("jslog: feed consumer: %w", err)
	}
	l.cons, err = cons.Consume(l.feed)
	if err != nil {
		return nil, fmt.Errorf("jslog: feed: %w", err)
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		l.cons.Stop()
		return nil, fmt.Errorf("jslog: stream %s: %w", cfg.Stream, err)
	}
	if info.State.FirstSeq > applied+1 && applied > 0 {
		l.lg.Warn("jslog: the stream no longer holds groups this node's view has not applied (retention); the view has a gap", "applied", applied, "first", info.State.FirstSeq)
	}
	if err := l.waitApplied(ctx, info.State.LastSeq); err != nil {
		l.cons.Stop()
		return nil, err
	}
	return l, nil
}

// Close stops the feed, waits (up to the publish timeout) for the groups
// in flight to be answered, and fails those still queued with ErrClosed.
// It does not close the view or the connection.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	var dones []func(error)
	for _, st := range l.stations {
		for _, g := range st.queue {
			dones = append(dones, g.dones...)
		}
		st.queue = nil
	}
	l.mu.Unlock()
	for _, d := range dones {
		d(ErrClosed)
	}
	waited := make(chan struct{})
	go func() { l.inflight.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(l.cfg.PublishTimeout + time.Second):
	}
	l.cons.Stop()
	return nil
}

// Append encodes c and queues it in its station's next group; done is
// called once the group is acknowledged (nil) or refused. A commit the log
// refuses (bad records or events, too large) fails through done and fences
// the station, like one the stream refuses.
func (l *Log) Append(c *commitlog.Commit, done func(error)) error {
	verr := check(c)
	body := appendCommit(nil, c)
	if verr == nil && len(body) > maxGroupBytes {
		verr = fmt.Errorf("jslog: commit of station %s: %d bytes, over the %d a group holds", c.Station, len(body), maxGroupBytes)
	}

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	if c.Station == "" {
		// A commit of no station (a notification, a purge): its own
		// group, unfenced.
		if verr != nil {
			l.mu.Unlock()
			done(verr)
			return nil
		}
		g := &group{body: append([]byte{groupVersion}, body...), dones: []func(error){done}, events: len(c.Events), subject: l.cfg.Subject + "._"}
		l.mu.Unlock()
		l.publish(g, 0, false)
		return nil
	}
	st := l.stations[c.Station]
	if st == nil {
		st = &station{sid: c.Station}
		l.stations[c.Station] = st
	}
	if c.Reopen && st.flying == nil && len(st.queue) == 0 {
		st.fenced = false
		if st.loaded {
			st.base = st.loadBase
		} else if !st.wrote {
			// Not loaded through Load: the view's last group of it.
			st.base = l.viewStationSeq(c.Station)
		}
		st.loaded, st.wrote = false, true
	}
	if st.fenced || verr != nil {
		st.fenced = true
		l.mu.Unlock()
		if verr == nil {
			verr = fmt.Errorf("jslog: commit of station %s: %w", c.Station, ErrFenced)
		}
		done(verr)
		return nil
	}
	// Into the last waiting group if it has room, else a new one.
	var g *group
	if n := len(st.queue); n > 0 {
		last := st.queue[n-1]
		if len(last.body)+len(body) <= maxGroupBytes && last.events+len(c.Events) <= SeqsPerGroup {
			g = last
		}
	}
	if g == nil {
		g = &group{st: st, body: []byte{groupVersion}, subject: l.cfg.Subject + "." + c.Station, reopen: c.Reopen}
		st.queue = append(st.queue, g)
	}
	g.body = append(g.body, body...)
	g.dones = append(g.dones, done)
	g.events += len(c.Events)
	next, base := l.takeNext(st)
	l.mu.Unlock()
	if next != nil {
		l.publish(next, base, true)
	}
	return nil
}

// takeNext makes st's first waiting group the flying one, if none flies;
// l.mu is held.
func (l *Log) takeNext(st *station) (*group, uint64) {
	if st.flying != nil || len(st.queue) == 0 || l.closed {
		return nil, 0
	}
	g := st.queue[0]
	st.queue = st.queue[1:]
	st.flying = g
	return g, st.base
}

// publish sends g, fenced at base when fenced is set.
func (l *Log) publish(g *group, base uint64, fenced bool) {
	m := nats.NewMsg(g.subject)
	m.Data = g.body
	m.Header.Set(hdrWriter, l.writer)
	l.mu.Lock()
	l.msgID++
	id := l.writer + "/" + strconv.FormatUint(l.msgID, 10)
	l.mu.Unlock()
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(id), jetstream.WithExpectStream(l.cfg.Stream)}
	if fenced {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(base))
	}
	l.inflight.Add(1)
	l.pmu.Lock()
	l.pending[m] = g
	l.pmu.Unlock()
	if _, err := l.js.PublishMsgAsync(m, opts...); err != nil {
		l.answered(m, nil, err)
	}
}

// answered is a group's acknowledgement (ack) or failure (err).
func (l *Log) answered(m *nats.Msg, ack *jetstream.PubAck, err error) {
	l.pmu.Lock()
	g := l.pending[m]
	delete(l.pending, m)
	l.pmu.Unlock()
	if g == nil {
		return // answered already (a publish error and a late reply)
	}
	defer l.inflight.Done()
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		err = fmt.Errorf("%w (%w)", ErrTakenOver, err)
	}
	if err != nil {
		err = fmt.Errorf("jslog: commit group on %s: %w", g.subject, err)
	}

	st := g.st
	if st == nil { // a commit of no station
		if err == nil {
			l.noteAcked(ack.Sequence)
		}
		for _, d := range g.dones {
			d(err)
		}
		return
	}
	var failed []func(error)
	l.mu.Lock()
	st.flying = nil
	if err == nil {
		st.base = ack.Sequence
		l.acked = max(l.acked, ack.Sequence)
	} else {
		// The station's later commits derive from the lost ones.
		st.fenced = true
		for _, q := range st.queue {
			failed = append(failed, q.dones...)
		}
		st.queue = nil
	}
	next, base := l.takeNext(st)
	l.mu.Unlock()
	if next != nil {
		l.publish(next, base, true)
	}
	for _, d := range g.dones {
		d(err)
	}
	ferr := fmt.Errorf("jslog: commit of station %s: %w", st.sid, ErrFenced)
	for _, d := range failed {
		d(ferr)
	}
}

func (l *Log) noteAcked(seq uint64) {
	l.mu.Lock()
	l.acked = max(l.acked, seq)
	l.mu.Unlock()
}

// check refuses what the view could not apply.
func check(c *commitlog.Commit) error {
	for _, r := range c.Records {
		if r.Kind == "" || r.Key == "" {
			return fmt.Errorf("jslog: record %q of kind %q: empty kind or key", r.Key, r.Kind)
		}
	}
	if len(c.Events) > SeqsPerGroup {
		return fmt.Errorf("jslog: commit of station %s: %d events, over the %d a group holds", c.Station, len(c.Events), SeqsPerGroup)
	}
	for _, e := range c.Events {
		if e.Type == "" || (e.StationID == "" && e.UserID == "") {
			return fmt.Errorf("jslog: event %q: no type or no channel", e.Type)
		}
	}
	if c.RemoveStation && c.Station == "" {
		return errors.New("jslog: RemoveStation without a station")
	}
	return nil
}

// feed applies the stream's groups to the view, in stream order (the
// consumer's callback goroutine).
func (l *Log) feed(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		l.lg.Error("jslog: feed message without metadata", "error", err)
		return
	}
	seq := md.Sequence.Stream
	subject := m.Subject()
	sid := ""
	if p := l.cfg.Subject + "."; len(subject) > len(p) && subject[len(p):] != "_" {
		sid = subject[len(p):]
	}
	foreign := m.Headers().Get(hdrWriter) != l.writer
	commits, err := decodeGroup(m.Data())
	if err != nil {
		// Not ours to apply; keep the seq moving.
		l.lg.Error("jslog: undecodable commit group skipped", "seq", seq, "subject", subject, "error", err)
		commits = nil
	}
	l.applying <- struct{}{}
	err = l.view.UpdateAsync(func(tx *store.Tx) error {
		return applyGroup(tx, seq, sid, commits)
	}, func(_ []store.Event, err error) {
		<-l.applying
		if err != nil {
			l.lg.Error("jslog: applying a commit group to the local view failed", "seq", seq, "error", err)
			l.applyErr.Store(&err)
			return
		}
		l.advance(seq)
	})
	if err != nil {
		<-l.applying
		return
	}
	if sid != "" && foreign {
		l.mu.Lock()
		st := l.stations[sid]
		took := st != nil && st.wrote && !st.fenced && st.base < seq
		if took {
			st.fenced = true
		}
		l.mu.Unlock()
		if took && l.cfg.OnTakeover != nil {
			l.cfg.OnTakeover(sid)
		}
	}
}

// applyGroup writes one group into the view's transaction; a group at or
// below the view's applied sequence (a redelivery) is skipped.
func applyGroup(tx *store.Tx, seq uint64, sid string, commits []commitlog.Commit) error {
	if v, err := tx.Get(kindMeta, keyApplied); err == nil && len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
		return nil
	}
	idx := uint64(0)
	for i := range commits {
		c := &commits[i]
		for _, r := range c.Records {
			var err error
			if r.Value == nil {
				err = tx.Delete(store.Kind(r.Kind), r.Key)
			} else {
				err = tx.Put(store.Kind(r.Kind), r.Key, r.Value)
			}
			if err != nil {
				return err
			}
		}
		for j := range c.Events {
			e := &c.Events[j]
			ev := store.Event{Type: e.Type, Time: e.Time, StationID: e.StationID, UserID: e.UserID, Fields: e.Fields}
			if err := tx.AppendAt(&ev, seq*SeqsPerGroup+idx); err != nil {
				return err
			}
			idx++
		}
		if c.RemoveStation && sid != "" {
			if err := tx.DeleteStation(sid); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], seq)
	if sid != "" {
		if err := tx.Put(kindStation, sid, v[:]); err != nil {
			return err
		}
	}
	return tx.Put(kindMeta, keyApplied, v[:])
}

// advance records that the view applied seq.
func (l *Log) advance(seq uint64) {
	l.amu.Lock()
	if seq > l.applied.Load() {
		l.applied.Store(seq)
		close(l.advanced)
		l.advanced = make(chan struct{})
	}
	l.amu.Unlock()
}

// Applied returns the last stream sequence the view applied.
func (l *Log) Applied() uint64 { return l.applied.Load() }

// waitApplied waits until the view applied seq, for at most ReadWait.
func (l *Log) waitApplied(ctx context.Context, seq uint64) error {
	var timeout <-chan time.Time
	for {
		if p := l.applyErr.Load(); p != nil {
			return fmt.Errorf("jslog: the local view: %w", *p)
		}
		l.amu.Lock()
		ch := l.advanced
		l.amu.Unlock()
		if l.applied.Load() >= seq {
			return nil
		}
		if timeout == nil {
			t := time.NewTimer(l.cfg.ReadWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-ch:
		case <-timeout:
			return fmt.Errorf("%w: at %d, waiting for %d", ErrViewBehind, l.applied.Load(), seq)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readable waits until the view holds what this log's commits made
// durable.
func (l *Log) readable() error {
	l.mu.Lock()
	acked := l.acked
	l.mu.Unlock()
	return l.waitApplied(context.Background(), acked)
}

func (l *Log) viewApplied() (uint64, error) {
	var seq uint64
	err := l.view.View(func(tx *store.Tx) error {
		v, err := tx.Get(kindMeta, keyApplied)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(v) != 8 {
			return fmt.Errorf("jslog: applied sequence of %d bytes", len(v))
		}
		seq = binary.BigEndian.Uint64(v)
		return nil
	})
	return seq, err
}

func (l *Log) viewStationSeq(sid string) uint64 {
	var seq uint64
	_ = l.view.View(func(tx *store.Tx) error {
		seq = stationSeq(tx, sid)
		return nil
	})
	return seq
}

func stationSeq(tx *store.Tx, sid string) uint64 {
	v, err := tx.Get(kindStation, sid)
	if err != nil || len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// Record reads the view, once it holds this node's durable commits.
func (l *Log) Record(kind commitlog.Kind, key string) ([]byte, error) {
	if err := l.readable(); err != nil {
		return nil, err
	}
	return l.view.Record(kind, key)
}

// Records reads the view, once it holds this node's durable commits.
func (l *Log) Records(kind commitlog.Kind, prefix string, fn func(key string, value []byte) bool) error {
	if err := l.readable(); err != nil {
		return err
	}
	return l.view.Records(kind, prefix, fn)
}

// Load waits until the view holds the stream's last group of each station
// in sids (of the whole stream, for more than one), then calls fn with one
// snapshot of the view and fences each station at its last group in it:
// the station's next Reopen commit is refused if anyone wrote for it since.
func (l *Log) Load(sids []string, fn func(commitlog.Reader) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.ReadWait)
	defer cancel()
	var last uint64
	switch len(sids) {
	case 0:
	case 1:
		m, err := l.stream.GetLastMsgForSubject(ctx, l.cfg.Subject+"."+sids[0])
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			return fmt.Errorf("jslog: last group of station %s: %w", sids[0], err)
		default:
			last = m.Sequence
		}
	default:
		info, err := l.stream.Info(ctx)
		if err != nil {
			return fmt.Errorf("jslog: stream %s: %w", l.cfg.Stream, err)
		}
		last = info.State.LastSeq
	}
	if err := l.waitApplied(ctx, max(last, l.ackedSeq())); err != nil {
		return err
	}
	bases := make([]uint64, len(sids))
	err := l.view.View(func(tx *store.Tx) error {
		for i, sid := range sids {
			bases[i] = stationSeq(tx, sid)
		}
		return fn(tx)
	})
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, sid := range sids {
		st := l.stations[sid]
		if st == nil {
			st = &station{sid: sid}
			l.stations[sid] = st
		}
		st.loadBase, st.loaded = bases[i], true
	}
	return nil
}

func (l *Log) ackedSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// StationInfo reads the view's catalogue, once it holds this node's
// durable commits (a commit may remove a station).
func (l *Log) StationInfo(sid string) (commitlog.StationInfo, error) {
	if err := l.readable(); err != nil {
		return commitlog.StationInfo{}, err
	}
	return l.view.StationInfo(sid)
}

// StationInfos reads the view's catalogue, like StationInfo.
func (l *Log) StationInfos() ([]commitlog.StationInfo, error) {
	if err := l.readable(); err != nil {
		return nil, err
	}
	return l.view.StationInfos()
}

// UserExists reads the view's catalogue.
func (l *Log) UserExists(uid string) (bool, error) { return l.view.UserExists(uid) }
