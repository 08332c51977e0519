package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Defaults for the zero values of Options and Retention.
const (
	DefaultOpenTimeout  = time.Second
	DefaultCompactEvery = time.Minute
	DefaultMaxBatch     = 4096
	DefaultMaxAge       = 7 * 24 * time.Hour
	DefaultMaxEvents    = 1_000_000
	// DefaultMaxStationEvents is Retention.MaxStationEvents' zero value.
	DefaultMaxStationEvents = 50_000
)

// initialMmapSize is the bolt mapping made at open: 1 GiB on 64-bit
// platforms, bolt's default (grow as needed) elsewhere.
const initialMmapSize = (1 << 30) * (strconv.IntSize / 64)

// Bucket names. Record kinds live in "rec/<kind>" so they can never collide
// with the store's own buckets.
var (
	bucketSys           = []byte("sys")           // lastSeq
	bucketEvents        = []byte("events")        // be64(seq) → event record
	bucketIdxStation    = []byte("idx_station_e") // stationIndexKey → ""
	bucketIdxStationOld = []byte("idx_station")   // sid 0x00 be64(seq): before the epoch prefix; migrated at open
	bucketIdxUser       = []byte("idx_user")      // uid 0x00 be64(seq) → ""
	bucketStations      = []byte("stations")      // sid → station record
	bucketUsers         = []byte("users")         // uid → user record
	bucketTokens        = []byte("user_tokens")   // sha256(token) → uid
	keyLastSeq          = []byte("last_seq")      // be64
	// keyFirstSeq: be64, the lowest seq not compacted away (events below it
	// were removed, or never existed: seqs may skip values). Files written
	// before it existed have none; their first event is the first seq.
	keyFirstSeq      = []byte("first_seq")
	knownKinds       = []Kind{KindStationState, KindBooking, KindUserBooking, KindCommand, KindMeta}
	internalBuckets  = [][]byte{bucketSys, bucketEvents, bucketIdxStation, bucketIdxUser, bucketStations, bucketUsers, bucketTokens}
	recBucketPrefix  = "rec/"
	errTxDone        = errors.New("store: transaction used after its fn returned")
	errReadOnly      = errors.New("store: write in a read-only transaction")
	errUpdateInPanic = errors.New("store: update fn panicked")
)

// Store is the durable state of swapd. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	opts Options
	log  *slog.Logger

	lastSeq  atomic.Uint64 // newest durable seq; stored after each commit
	firstSeq atomic.Uint64 // oldest retained seq; see FirstSeq
	logc     logCounts     // events per station channel, and the station caps' cuts (compact.go)

	listener atomic.Pointer[func([]Event)]

	// Group commit queue, guarded by mu. The committer goroutine waits on
	// cond for work or for closed.
	mu     sync.Mutex
	cond   *sync.Cond
	queue  []*request
	closed bool

	// last is the committer's own copy of the newest committed seq; only the
	// committer goroutine touches it.
	last uint64
	// fenced holds the stations whose last commit failed (commitlog.go);
	// only the committer goroutine touches it.
	fenced map[string]bool

	m *storeMetrics

	compactMu sync.Mutex // one compaction at a time

	stop      chan struct{} // closed by Close
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the bbolt file at path, creating its
// directory if missing. If another process (or another Store in this
// process) holds it, Open fails within Options.OpenTimeout with an error
// wrapping ErrLocked that names the path.
func Open(path string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        opts.OpenTimeout,
		NoSync:         opts.NoSync,
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		// A remap (when the file outgrows the mapping) waits for every
		// open read transaction and blocks new ones; mapping generously
		// up front makes it rare. The mapping is address space only: the
		// file grows as before.
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s (no file lock after %s; is another swapd using this data dir?)", ErrLocked, path, opts.OpenTimeout)
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Store{
		db:   db,
		path: path,
		opts: opts,
		log:  opts.Logger,
		stop: make(chan struct{}),

		fenced: map[string]bool{},
	}
	if s.m, err = newStoreMetrics(opts.Registerer); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: metrics: %w", err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cond = sync.NewCond(&s.mu)
	if err := s.init(); err != nil {
		s.cancel()
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s.wg.Add(2)
	go s.commitLoop()
	go s.retentionLoop()
	return s, nil
}

func (o Options) withDefaults() Options {
	if o.OpenTimeout <= 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.CompactEvery <= 0 {
		o.CompactEvery = DefaultCompactEvery
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Retention.MaxAge == 0 {
		o.Retention.MaxAge = DefaultMaxAge
	}
	if o.Retention.MaxEvents == 0 {
		o.Retention.MaxEvents = DefaultMaxEvents
	}
	if o.Retention.MaxStationEvents == 0 {
		o.Retention.MaxStationEvents = DefaultMaxStationEvents
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// init creates the buckets and loads the seq counters.
func (s *Store) init() error {
	return s.db.Update(func(btx *bolt.Tx) error {
		for _, name := range internalBuckets {
			if _, err := btx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		if err := migrateStationIndex(btx); err != nil {
			return err
		}
		if err := initCredentials(btx); err != nil {
			return err
		}
		for _, k := range knownKinds {
			if _, err := btx.CreateBucketIfNotExists(recBucket(k)); err != nil {
				return fmt.Errorf("create bucket for %s: %w", k, err)
			}
		}
		var last uint64
		if v := btx.Bucket(bucketSys).Get(keyLastSeq); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("corrupt last_seq (%d bytes)", len(v))
			}
			last = binary.BigEndian.Uint64(v)
		}
		c := btx.Bucket(bucketEvents).Cursor()
		var first, floor uint64
		sys := btx.Bucket(bucketSys)
		switch v := sys.Get(keyFirstSeq); {
		case len(v) == 8:
			floor = binary.BigEndian.Uint64(v)
		case v != nil:
			return fmt.Errorf("corrupt first_seq (%d bytes)", len(v))
		case last == 0:
			// A new log: nothing below its first event was ever removed.
			if err := sys.Put(keyFirstSeq, binary.BigEndian.AppendUint64(nil, 1)); err != nil {
				return err
			}
			floor = 1
		}
		if k, _ := c.First(); k != nil {
			if len(k) != 8 {
				return fmt.Errorf("corrupt event key (%d bytes)", len(k))
			}
			first = binary.BigEndian.Uint64(k)
			// Defensive: the persisted counter is authoritative, but it can
			// never be below an existing key.
			lk, _ := c.Last()
			if n := binary.BigEndian.Uint64(lk); n > last {
				last = n
			}
			if floor > 0 {
				first = min(first, floor)
			}
		} else if last > 0 {
			first = max(last+1, floor) // everything was compacted
		}
		s.last = last
		s.lastSeq.Store(last)
		s.firstSeq.Store(first)
		return s.logc.init(btx, last)
	})
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close stops the committer and retention goroutines, fails pending Updates
// with ErrClosed, and closes the file. It is idempotent; every call returns
// the result of the first.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.cond.Broadcast()
		s.mu.Unlock()
		close(s.stop)
		s.cancel()
		s.wg.Wait()
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("store: close %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// SetCommitListener sets fn to be called after every durable commit that
// appended events, with those events in seq order, from the committer
// goroutine (so calls are serialized and seqs across calls increase). fn must
// not block, must not call Update, and must not modify the events (their
// Data is shared with the Update callers). Call before the first Update; a
// nil fn removes the listener.
func (s *Store) SetCommitListener(fn func(events []Event)) {
	if fn == nil {
		s.listener.Store(nil)
		return
	}
	s.listener.Store(&fn)
}

// request states: the committer claims a queued request before running its
// fn; a caller whose ctx ends claims it first to withdraw it.
const (
	stateQueued int32 = iota
	stateRunning
	stateWithdrawn
)

type request struct {
	ctx    context.Context
	fn     func(*Tx) error
	state  atomic.Int32
	events []Event
	err    error
	done   chan struct{}                   // Update: closed by reply
	cb     func(events []Event, err error) // UpdateAsync: called by reply
}

func (r *request) reply(events []Event, err error) {
	r.events, r.err = events, err
	if r.cb != nil {
		r.cb(events, err)
		return
	}
	close(r.done)
}

// Update runs fn in a group-committed read-write transaction and returns once
// the transaction is durably on disk, with the events fn appended (Seq and
// Data filled in). If fn returns an error nothing it did is kept and that
// error is returned. fn may run more than once (when another caller's fn in
// the same batch fails, the batch is retried without it), so it must not
// have side effects outside tx until Update returns.
//
// If ctx ends before fn has started, Update returns ctx.Err() and fn never
// runs; once fn runs, Update waits for the commit. After Close it returns
// ErrClosed. A panic in fn is recovered and returned as an error.
func (s *Store) Update(ctx context.Context, fn func(tx *Tx) error) ([]Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r := &request{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.queue = append(s.queue, r)
	if len(s.queue) == 1 {
		s.cond.Signal()
	}
	s.mu.Unlock()

	select {
	case <-r.done:
		return r.events, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateWithdrawn) {
			return nil, ctx.Err()
		}
		<-r.done // fn is running in a batch: wait for its outcome
		return r.events, r.err
	}
}

// UpdateAsync queues fn like Update but does not wait: done is called
// exactly once, on the committer goroutine, after the transaction is
// durably on disk (err nil, with the events fn appended) or has failed. done
// must return quickly and must not call back into the store's write path
// (Update would deadlock); it runs after the commit listener, so the
// listener has seen the events first. Requests are committed in the order
// they were queued, whether by Update or UpdateAsync; a request commits in
// the same transaction as, or after, every request queued before it.
//
// fn may run more than once, as for Update. If the store is closed
// UpdateAsync returns ErrClosed and done is never called; requests still
// queued when the store closes get done(nil, ErrClosed).
func (s *Store) UpdateAsync(fn func(tx *Tx) error, done func(events []Event, err error)) error {
	r := &request{ctx: context.Background(), fn: fn, cb: done}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.queue = append(s.queue, r)
	if len(s.queue) == 1 {
		s.cond.Signal()
	}
	return nil
}

// commitLoop is the committer goroutine: it takes whatever is queued (up to
// MaxBatch) and commits it in one transaction, then immediately looks again.
func (s *Store) commitLoop() {
	defer s.wg.Done()
	batch := make([]*request, 0, 64)
	for {
		s.mu.Lock()
		for len(s.queue) == 0 && !s.closed {
			s.cond.Wait()
		}
		if s.closed {
			pending := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, r := range pending {
				if r.state.CompareAndSwap(stateQueued, stateRunning) {
					r.reply(nil, ErrClosed)
				}
			}
			return
		}
		n := min(len(s.queue), s.opts.MaxBatch)
		batch = append(batch[:0], s.queue[:n]...)
		rest := copy(s.queue, s.queue[n:])
		clear(s.queue[rest:])
		s.queue = s.queue[:rest]
		s.mu.Unlock()

		s.runBatch(batch)
		clear(batch)
		s.gather()
	}
}

// gather lets the callers just answered run before the committer looks at
// the queue again, so a caller that Updates in a loop joins the next batch
// instead of trailing it by one commit. It yields (no timed wait) while the
// queue keeps growing, a few times at most; with nothing else runnable it
// returns at once.
func (s *Store) gather() {
	prev := -1
	for range 4 {
		runtime.Gosched()
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n == prev || n >= s.opts.MaxBatch {
			return
		}
		prev = n
	}
}

// runBatch commits the requests of one batch, dropping withdrawn ones and
// retrying without any whose fn fails.
func (s *Store) runBatch(batch []*request) {
	live := batch[:0]
	for _, r := range batch {
		if !r.state.CompareAndSwap(stateQueued, stateRunning) {
			continue // withdrawn; its caller has returned
		}
		if err := r.ctx.Err(); err != nil {
			r.reply(nil, err)
			continue
		}
		live = append(live, r)
	}
	for len(live) > 0 {
		failed, err := s.tryCommit(live)
		if failed >= 0 {
			live[failed].reply(nil, err)
			live = append(live[:failed], live[failed+1:]...)
			continue
		}
		if err != nil {
			for _, r := range live {
				r.reply(nil, err)
			}
		}
		return
	}
}

// tryCommit runs every fn of live in one bolt transaction and commits it. If
// a fn fails it rolls back and returns that fn's index and error; a failure
// to begin or commit returns index -1 and the error. On success it publishes
// the new seq, calls the listener and replies to every caller.
func (s *Store) tryCommit(live []*request) (int, error) {
	start := time.Now()
	btx, err := s.db.Begin(true)
	if err != nil {
		return -1, fmt.Errorf("store: begin: %w", mapBoltErr(err))
	}
	seq := s.last
	nEvents := 0
	for i, r := range live {
		r.events, r.err = nil, r.ctx.Err()
		if r.err != nil {
			continue // ctx ended before its fn ran: skip it, keep the batch
		}
		t := &Tx{btx: btx, seq: &seq, writable: true}
		err := callFn(r.fn, t)
		t.btx = nil
		if err != nil {
			_ = btx.Rollback()
			return i, err
		}
		r.events = t.events
		nEvents += len(t.events)
	}
	if seq != s.last {
		var v [8]byte
		binary.BigEndian.PutUint64(v[:], seq)
		if err := btx.Bucket(bucketSys).Put(keyLastSeq, v[:]); err != nil {
			_ = btx.Rollback()
			return -1, fmt.Errorf("store: persist seq %d: %w", seq, err)
		}
	}
	if err := btx.Commit(); err != nil {
		return -1, fmt.Errorf("store: commit: %w", mapBoltErr(err))
	}
	s.m.observe(time.Since(start), len(live))
	prev := s.last
	if nEvents > 0 {
		s.logc.appended(live)
	}
	s.last = seq
	s.lastSeq.Store(seq)
	if seq > prev {
		s.firstSeq.CompareAndSwap(0, prev+1)
	}
	if nEvents > 0 {
		if lp := s.listener.Load(); lp != nil {
			all := live[0].events
			if len(all) != nEvents {
				all = make([]Event, 0, nEvents)
				for _, r := range live {
					all = append(all, r.events...)
				}
			}
			(*lp)(all)
		}
	}
	for _, r := range live {
		r.reply(r.events, r.err)
	}
	return -1, nil
}

func callFn(fn func(*Tx) error, t *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", errUpdateInPanic, p)
		}
	}()
	return fn(t)
}

// View runs fn in a read-only transaction. It does not wait for the
// committer; it sees the last committed state.
func (s *Store) View(fn func(tx *Tx) error) error {
	btx, err := s.db.Begin(false)
	if err != nil {
		return mapBoltErr(err)
	}
	defer btx.Rollback()
	t := &Tx{btx: btx}
	err = fn(t)
	t.btx = nil
	return err
}

// view is View for the store's own read paths, on the raw bolt tx.
func (s *Store) view(fn func(btx *bolt.Tx) error) error {
	btx, err := s.db.Begin(false)
	if err != nil {
		return mapBoltErr(err)
	}
	defer btx.Rollback()
	return fn(btx)
}

func mapBoltErr(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// LastSeq returns the seq of the newest durable event (0 for an empty log).
func (s *Store) LastSeq() uint64 { return s.lastSeq.Load() }

// FirstSeq returns the seq of the oldest retained event, 0 for a log that
// never had an event. Events with seq below it were compacted. When
// retention removed every event, it is LastSeq()+1.
func (s *Store) FirstSeq() uint64 { return s.firstSeq.Load() }

func (s *Store) retentionLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.CompactEvery)
	defer t.Stop()
	ctx := s.ctx // cancelled by Close, so a running compaction stops early
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			n, err := s.Compact(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				s.log.Error("store compaction failed", "path", s.path, "removed", n, "err", err)
			case n > 0:
				s.log.Debug("store compaction", "path", s.path, "removed", n, "first_seq", s.FirstSeq())
			}
		}
	}
}
