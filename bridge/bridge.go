package bridge

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Sentinel errors, returned wrapped with context; compare with errors.Is.
var (
	// ErrStationNotFound: no provisioned station has that id.
	ErrStationNotFound = errors.New("bridge: station not found")
	// ErrNoBatteryAvailable: the station has no bookable battery.
	ErrNoBatteryAvailable = errors.New("bridge: no battery available")
	// ErrBookingNotFound: no such booking, or it belongs to someone else.
	ErrBookingNotFound = errors.New("bridge: booking not found")
	// ErrBookingLimit: the user already holds Config.MaxActiveBookings
	// active (pending, confirmed or ready) bookings.
	ErrBookingLimit = errors.New("bridge: booking limit reached")
	// ErrBookingState: the booking's status does not allow the request.
	ErrBookingState = errors.New("bridge: booking state does not allow this")
	// ErrBadRequest: an argument is invalid.
	ErrBadRequest = errors.New("bridge: bad request")
	// ErrClosed: the bridge was closed (or not started).
	ErrClosed = errors.New("bridge: closed")
)

// CommandSender delivers a command payload to a station (QoS 1 on its cmd
// topic). The broker implements it. It should not block for long; the bridge
// calls it from its own sender goroutine only.
type CommandSender interface {
	SendToStation(sid string, payload []byte) error
}

// Command record states (store.KindCommand).
const (
	cmdQueued = "queued"
	cmdSent   = "sent"
	cmdAcked  = "acked"
	cmdFailed = "failed"
)

// commandRec is a persisted command to a station.
type commandRec struct {
	Cmd       wire.Command `json:"cmd"`
	StationID string       `json:"sid"`
	State     string       `json:"state"`
	Attempts  int          `json:"n,omitempty"`
	Created   time.Time    `json:"created"`
	Deadline  time.Time    `json:"deadline"`
	Error     string       `json:"err,omitempty"`
	// NextAt is the next retry (memory only).
	NextAt time.Time `json:"-"`
}

func (c *commandRec) pending() bool { return c.State == cmdQueued || c.State == cmdSent }

// station is the in-memory cache of one station, serialized by mu (taken
// with Bridge.lockStation). mu is held across the store commit of every
// change to the station, its bookings and its commands, except for the
// pipelined telemetry commits of SubmitPublish (see pipeline.go): st may be
// ahead of the store by those, which are tracked by inflight.
type station struct {
	mu       sync.Mutex
	info     store.Station
	st       StationState
	cmds     map[string]*commandRec // pending commands by id
	lastSnap time.Time              // last snapshot request (throttle)
	budget   eventBudget            // the station's event budget (budget.go)
	// reconnected is set by StationConnected; the next tick resends every
	// pending command.
	reconnected atomic.Bool
	// removed is set under mu once DeleteStation committed: every later
	// commit of the station fails with ErrStationNotFound.
	removed atomic.Bool

	// broken is set when a pipelined commit of the station failed: every
	// later commit of the station fails in its transaction until
	// lockStation has reloaded st from the store.
	broken atomic.Bool
	// pmu guards inflight (pipelined commits queued, not yet answered) and
	// drained (closed when inflight drops to 0, if someone waits). It is
	// taken on the store's committer goroutine and never held while
	// waiting.
	pmu      sync.Mutex
	inflight int
	drained  chan struct{}
}

// Bridge turns station messages into state, events and bookings. See the
// package documentation.
type Bridge struct {
	cfg   Config
	m     machine
	store *store.Store
	cmds  CommandSender
	log   *slog.Logger

	metrics *bridgeMetrics

	mu       sync.RWMutex
	stations map[string]*station
	// active counts every user's active bookings (Config.MaxActiveBookings).
	active *activeBookings

	sendq     chan sendReq
	done      chan struct{}
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
	started   bool
	// tickedOnce: the timer loop ran once.
	tickedOnce atomic.Bool
}

type sendReq struct {
	sid, cmdID string // cmdID empty: not persisted (snapshot)
	payload    []byte
}

// New builds a Bridge over an open store. cmds delivers commands to
// stations. Call Start before use.
func New(cfg Config, st *store.Store, cmds CommandSender) (*Bridge, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil store", ErrBadRequest)
	}
	if cmds == nil {
		return nil, fmt.Errorf("%w: nil command sender", ErrBadRequest)
	}
	cfg = cfg.withDefaults()
	if cfg.ReadySoC > 100 || cfg.MinSoH > 100 {
		return nil, fmt.Errorf("%w: ready soc and soh floor must be ≤ 100", ErrBadRequest)
	}
	m, err := newBridgeMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("bridge: metrics: %w", err)
	}
	b := &Bridge{
		metrics: m,
		cfg:     cfg,
		store:   st,
		cmds:    cmds,
		log:     cfg.Logger,
		m: machine{thresholds{
			readySoC: cfg.ReadySoC, minSoH: cfg.MinSoH, maxTempC: cfg.MaxTempC,
			hold: cfg.BookingHold, chargeWait: cfg.ChargeWait,
		}},
		stations: make(map[string]*station),
		active:   newActiveBookings(cfg.MaxActiveBookings),
		sendq:    make(chan sendReq, cfg.SendQueue),
		done:     make(chan struct{}),
	}
	return b, nil
}

// Start loads stations, their state and pending commands from the store and
// starts the sender and timer goroutines. Timers (hold expiry, retries,
// liveness) resume from the stored deadlines.
func (b *Bridge) Start(ctx context.Context) error {
	err := fmt.Errorf("bridge: already started")
	b.startOnce.Do(func() { err = b.start(ctx) })
	return err
}

func (b *Bridge) start(ctx context.Context) error {
	select {
	case <-b.done:
		return ErrClosed
	default:
	}
	infos, err := b.store.Stations()
	if err != nil {
		return fmt.Errorf("bridge: load stations: %w", err)
	}
	now := b.cfg.Clock()
	err = b.store.View(func(tx *store.Tx) error {
		for _, info := range infos {
			s := &station{info: info, cmds: make(map[string]*commandRec)}
			var err error
			if s.st, err = b.loadState(tx, info); err != nil {
				return err
			}
			for i := range s.st.Slots {
				if r := &s.st.Slots[i].Res; r.active() {
					b.active.add(r.UserID, r.BookingID)
				}
			}
			b.stations[info.ID] = s
		}
		return tx.Scan(store.KindCommand, "", func(key string, value []byte) bool {
			var c commandRec
			if json.Unmarshal(value, &c) != nil || !c.pending() {
				return true
			}
			if s := b.stations[c.StationID]; s != nil {
				c.NextAt = now
				if c.Deadline.Before(now.Add(b.cfg.CommandRetry)) {
					c.Deadline = now.Add(b.cfg.CommandRetry)
				}
				s.cmds[key] = &c
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("bridge: load state: %w", err)
	}
	if err := b.purgeCommands(ctx, now); err != nil {
		return err
	}
	b.started = true
	b.wg.Add(2)
	go b.sender()
	go b.ticker()
	return nil
}

// purgeCommands deletes settled (acked or failed) command records older
// than CommandKeep, and records that cannot be decoded or belong to no
// station. Pending records are never touched.
func (b *Bridge) purgeCommands(ctx context.Context, now time.Time) error {
	var purge []string
	err := b.store.View(func(tx *store.Tx) error {
		return tx.Scan(store.KindCommand, "", func(key string, value []byte) bool {
			var c commandRec
			if err := json.Unmarshal(value, &c); err != nil {
				purge = append(purge, key)
				return true
			}
			b.mu.RLock()
			known := b.stations[c.StationID] != nil
			b.mu.RUnlock()
			if !known || (!c.pending() && now.Sub(c.Created) > b.cfg.CommandKeep) {
				purge = append(purge, key)
			}
			return true
		})
	})
	if err != nil || len(purge) == 0 {
		return err
	}
	_, err = b.store.Update(ctx, func(tx *store.Tx) error {
		for _, k := range purge {
			if err := tx.Delete(store.KindCommand, k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("bridge: purge old commands: %w", err)
	}
	return nil
}

// Close stops the goroutines and waits for them. It is idempotent. It does
// not close the store.
func (b *Bridge) Close() error {
	b.closeOnce.Do(func() {
		close(b.done)
		b.wg.Wait()
	})
	return nil
}

func (b *Bridge) closed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// station returns the station, loading a station provisioned since Start.
func (b *Bridge) station(sid string) (*station, error) {
	b.mu.RLock()
	s := b.stations[sid]
	b.mu.RUnlock()
	if s != nil {
		return s, nil
	}
	if !wire.ValidID(sid) {
		return nil, fmt.Errorf("%w: %q", ErrStationNotFound, sid)
	}
	info, err := b.store.Station(sid)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrStationNotFound, sid)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: station %s: %w", sid, err)
	}
	return b.addStation(info), nil
}

func (b *Bridge) addStation(info store.Station) *station {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.stations[info.ID]; s != nil {
		return s
	}
	s := &station{info: info, cmds: make(map[string]*commandRec)}
	s.st = newStation(info.ID, info.Slots)
	s.st.Inv = b.m.inventory(&s.st)
	b.stations[info.ID] = s
	return s
}

// StationExists reports whether sid is a provisioned station.
func (b *Bridge) StationExists(sid string) bool {
	_, err := b.station(sid)
	return err == nil
}

func (b *Bridge) allStations() []*station {
	b.mu.RLock()
	out := make([]*station, 0, len(b.stations))
	for _, s := range b.stations {
		out = append(out, s)
	}
	b.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].info.ID < out[j].info.ID })
	return out
}

// newID returns a unique id: the prefix, then the creation time in
// nanoseconds and 40 random bits, in sortable base32 (ids of one prefix sort
// by creation time).
func newID(prefix string, now time.Time) string {
	var buf [13]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(now.UnixNano()))
	_, _ = rand.Read(buf[8:])
	return prefix + idEnc.EncodeToString(buf[:])
}

var idEnc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// stateBufPool holds buffers for encoded station state records (a queued
// commit returns its buffer once it is answered).
var stateBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// change is one commit of a station's transition.
type change struct {
	next StationState
	eff  effects
	// cmdUpdates are existing command records whose state changes.
	cmdUpdates []*commandRec
	// extra runs inside the transaction after the rest (may be nil).
	extra func(tx *store.Tx) error
}

// loadState reads a station's stored state; a station with none yet gets a
// fresh one.
func (b *Bridge) loadState(tx *store.Tx, info store.Station) (StationState, error) {
	var st StationState
	raw, err := tx.Get(store.KindStationState, info.ID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		st = newStation(info.ID, info.Slots)
		st.Inv = b.m.inventory(&st)
		return st, nil
	case err != nil:
		return st, fmt.Errorf("station %s: %w", info.ID, err)
	}
	if err := decodeState(raw, &st); err != nil {
		return st, fmt.Errorf("station %s: decode state: %w", info.ID, err)
	}
	if len(st.Slots) < info.Slots {
		st.Slots = append(st.Slots, make([]SlotState, info.Slots-len(st.Slots))...)
	}
	return st, nil
}

// encodeFields encodes the fields of a transition's events, before its
// transaction (which may run more than once).
func encodeFields(evs []outEvent) ([][]byte, error) {
	fields := make([][]byte, len(evs))
	for i, ev := range evs {
		var err error
		if fields[i], err = json.Marshal(ev.Fields); err != nil {
			return nil, fmt.Errorf("bridge: encode %s event: %w", ev.Type, err)
		}
	}
	return fields, nil
}

// appendEvents appends a transition's events of station sid to the log.
func appendEvents(tx *store.Tx, sid string, now time.Time, evs []outEvent, fields [][]byte) error {
	for i, ev := range evs {
		if err := tx.Append(&store.Event{Type: ev.Type, Time: now, StationID: sid, UserID: ev.UserID, Fields: fields[i]}); err != nil {
			return err
		}
	}
	return nil
}

// commit persists a transition of s (whose mu the caller holds): the next
// state, new commands, booking changes, command updates and the events, in
// one store Update. Only after it succeeded is the cache updated and are the
// commands handed to the sender.
func (b *Bridge) commit(ctx context.Context, s *station, c *change, now time.Time) error {
	if s.removed.Load() {
		return fmt.Errorf("bridge: commit station %s: %w", s.info.ID, ErrStationNotFound)
	}
	b.settleCommands(s, c)
	enc := stateBufPool.Get().(*[]byte)
	defer stateBufPool.Put(enc)
	*enc = appendState((*enc)[:0], &c.next)
	stateRec := *enc // Put copies it
	var err error
	newCmds := make([]*commandRec, len(c.eff.Commands))
	cmdJSON := make([][]byte, 0, len(c.eff.Commands)+len(c.cmdUpdates))
	for i, cmd := range c.eff.Commands {
		cmd.ID = newID("c", now)
		newCmds[i] = &commandRec{Cmd: cmd, StationID: s.info.ID, State: cmdQueued, Created: now,
			Deadline: now.Add(b.cfg.CommandTimeout), NextAt: now.Add(b.cfg.CommandRetry), Attempts: 1}
	}
	for _, r := range append(newCmds, c.cmdUpdates...) {
		j, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("bridge: encode command: %w", err)
		}
		cmdJSON = append(cmdJSON, j)
	}
	allCmds := append(newCmds, c.cmdUpdates...)
	fields, err := encodeFields(c.eff.Events)
	if err != nil {
		return err
	}
	_, err = b.store.Update(ctx, func(tx *store.Tx) error {
		if s.broken.Load() {
			return errResync
		}
		if err := tx.Put(store.KindStationState, s.info.ID, stateRec); err != nil {
			return err
		}
		for i, r := range allCmds {
			if err := tx.Put(store.KindCommand, r.Cmd.ID, cmdJSON[i]); err != nil {
				return err
			}
		}
		for _, bc := range c.eff.Bookings {
			if err := updateBooking(tx, bc); err != nil {
				return err
			}
		}
		if c.extra != nil {
			if err := c.extra(tx); err != nil {
				return err
			}
		}
		return appendEvents(tx, s.info.ID, now, c.eff.Events, fields)
	})
	if err != nil {
		return fmt.Errorf("bridge: commit station %s: %w", s.info.ID, err)
	}
	s.st = c.next
	for _, bc := range c.eff.Bookings {
		if !activeStatus(bc.Status) {
			b.active.release(bc.ID)
		}
	}
	for _, r := range c.cmdUpdates {
		if !r.pending() {
			delete(s.cmds, r.Cmd.ID)
		}
	}
	for _, r := range newCmds {
		s.cmds[r.Cmd.ID] = r
		b.enqueue(s.info.ID, r)
	}
	return nil
}

// settleCommands stops the retries of a booking that ends in c: its pending
// reserve and unlock commands are marked failed in the same commit, so a
// reserve is never resent after the release that follows it.
func (b *Bridge) settleCommands(s *station, c *change) {
	for _, bc := range c.eff.Bookings {
		switch bc.Status {
		case wire.BookingStatusPending, wire.BookingStatusConfirmed, wire.BookingStatusReady:
			continue
		}
	next:
		for _, r := range s.cmds {
			if r.Cmd.BookingID != bc.ID || r.Cmd.Action == wire.ActionRelease || !r.pending() {
				continue
			}
			for _, u := range c.cmdUpdates {
				if u.Cmd.ID == r.Cmd.ID {
					continue next
				}
			}
			upd := *r
			upd.State, upd.Error = cmdFailed, "booking "+bc.Status
			c.cmdUpdates = append(c.cmdUpdates, &upd)
		}
	}
}

// updateBooking applies a state-machine booking change to its record.
func updateBooking(tx *store.Tx, bc bookingChange) error {
	raw, err := tx.Get(store.KindBooking, bc.ID)
	if err != nil {
		return fmt.Errorf("booking %s: %w", bc.ID, err)
	}
	var bk wire.Booking
	if err := json.Unmarshal(raw, &bk); err != nil {
		return fmt.Errorf("booking %s: decode: %w", bc.ID, err)
	}
	bk.Status = bc.Status
	if bc.Reason != "" {
		bk.Reason = bc.Reason
	}
	if !bc.ExpiresAt.IsZero() {
		bk.ExpiresAt = bc.ExpiresAt
	}
	j, err := json.Marshal(&bk)
	if err != nil {
		return err
	}
	return tx.Put(store.KindBooking, bc.ID, j)
}

// enqueue hands a persisted command to the sender without blocking; a full
// queue leaves it to the retry timer.
func (b *Bridge) enqueue(sid string, r *commandRec) {
	payload, err := json.Marshal(&r.Cmd)
	if err != nil {
		b.log.Error("bridge: encode command", "id", r.Cmd.ID, "err", err)
		return
	}
	b.trySend(sendReq{sid: sid, cmdID: r.Cmd.ID, payload: payload})
}

func (b *Bridge) trySend(req sendReq) {
	select {
	case b.sendq <- req:
	default:
		b.log.Warn("bridge: send queue full; command left to retry", "station", req.sid, "id", req.cmdID)
	}
}

// requestSnapshot asks s (locked) for a full telemetry, at most once per
// CommandRetry.
func (b *Bridge) requestSnapshot(s *station, now time.Time) {
	if !s.lastSnap.IsZero() && now.Sub(s.lastSnap) < b.cfg.CommandRetry {
		return
	}
	s.lastSnap = now
	cmd := wire.Command{ID: newID("s", now), Action: wire.ActionSnapshot}
	payload, _ := json.Marshal(&cmd)
	b.trySend(sendReq{sid: s.info.ID, payload: payload})
}

// sendBatch bounds how many queued commands the sender delivers before it
// records them as sent in one store commit.
const sendBatch = 128

// sender delivers queued commands. It takes what is queued (up to
// sendBatch), delivers each, then marks the delivered persisted commands
// sent in one store commit: a burst of commands costs one commit, not one
// each.
func (b *Bridge) sender() {
	defer b.wg.Done()
	batch := make([]sendReq, 0, sendBatch)
	for {
		select {
		case <-b.done:
			return
		case req := <-b.sendq:
			batch = append(batch[:0], req)
		drain:
			for len(batch) < sendBatch {
				select {
				case req := <-b.sendq:
					batch = append(batch, req)
				default:
					break drain
				}
			}
			sent := batch[:0]
			for _, req := range batch {
				if err := b.cmds.SendToStation(req.sid, req.payload); err != nil {
					b.log.Debug("bridge: send command", "station", req.sid, "id", req.cmdID, "err", err)
					continue
				}
				if req.cmdID != "" {
					sent = append(sent, req)
				}
			}
			b.markSent(sent)
			clear(batch)
		}
	}
}

// markSent records delivered commands as sent, in one commit. A command is
// marked only if its stored record is still queued, checked inside the
// transaction, so an acknowledgement or failure committed in the meantime
// is never overwritten; no station mutex is held across the commit.
func (b *Bridge) markSent(reqs []sendReq) {
	if len(reqs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var marked []sendReq
	_, err := b.store.Update(ctx, func(tx *store.Tx) error {
		marked = marked[:0] // fn may run more than once
		for _, req := range reqs {
			raw, err := tx.Get(store.KindCommand, req.cmdID)
			if errors.Is(err, store.ErrNotFound) {
				continue // settled and purged
			}
			if err != nil {
				return err
			}
			var rec commandRec
			if err := json.Unmarshal(raw, &rec); err != nil || rec.State != cmdQueued {
				continue // acked, failed or already sent (or undecodable: left alone)
			}
			rec.State = cmdSent
			j, err := json.Marshal(&rec)
			if err != nil {
				return err
			}
			if err := tx.Put(store.KindCommand, req.cmdID, j); err != nil {
				return err
			}
			marked = append(marked, req)
		}
		return nil
	})
	if err != nil {
		b.log.Warn("bridge: mark commands sent", "commands", len(reqs), "err", err)
		return
	}
	for _, req := range marked {
		b.mu.RLock()
		s := b.stations[req.sid]
		b.mu.RUnlock()
		if s == nil {
			continue
		}
		b.lockStation(s)
		if r := s.cmds[req.cmdID]; r != nil && r.State == cmdQueued {
			r.State = cmdSent
		}
		s.mu.Unlock()
	}
}

// ticker runs the timers every TickInterval.
func (b *Bridge) ticker() {
	defer b.wg.Done()
	t := time.NewTicker(b.cfg.TickInterval)
	defer t.Stop()
	lastPurge := b.cfg.Clock()
	for {
		select {
		case <-b.done:
			return
		case <-t.C:
			now := b.cfg.Clock()
			b.tick(now)
			if now.Sub(lastPurge) >= time.Hour {
				lastPurge = now
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				if err := b.purgeCommands(ctx, now); err != nil {
					b.log.Warn("bridge: purge commands", "err", err)
				}
				cancel()
			}
		}
	}
}

// tick applies the clock to every station: liveness, booking expiry and
// offline failure, command retries and command timeouts.
//
// A station with no timer due and no command in flight is skipped without
// copying its state (most stations, most seconds). The first tick after
// Start looks at every station, so that a changed domain setting (a
// threshold) is published once even for stations that stay quiet.
func (b *Bridge) tick(now time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offlineAfter := 3 * b.cfg.SnapshotInterval
	all := !b.tickedOnce.Swap(true)
	for _, s := range b.allStations() {
		if b.closed() {
			return
		}
		b.lockStation(s)
		if !all && len(s.cmds) == 0 && !s.reconnected.Load() && !s.budget.invHeld && !b.m.timersDue(&s.st, now, offlineAfter, b.cfg.OfflineFail) {
			s.mu.Unlock()
			continue
		}
		if err := b.tickStation(ctx, s, now); err != nil {
			b.log.Warn("bridge: timers", "station", s.info.ID, "err", err)
		}
		s.mu.Unlock()
	}
}

func (b *Bridge) tickStation(ctx context.Context, s *station, now time.Time) error {
	next, eff := b.m.timers(&s.st, now, 3*b.cfg.SnapshotInterval, b.cfg.OfflineFail)
	b.shape(s, &next, &eff, now) // publishes a held-back inventory_update
	if s.budget.invHeld && next.Inv == b.m.inventory(&next) {
		s.budget.invHeld = false // published meanwhile (by a booking, say)
	}
	c := &change{next: next, eff: eff}
	// Commands: time out or resend.
	var resend []*commandRec
	if s.reconnected.Swap(false) {
		for _, r := range s.cmds {
			r.NextAt = now
		}
	}
	ids := make([]string, 0, len(s.cmds))
	for id := range s.cmds {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		r := s.cmds[id]
		if now.Before(r.NextAt) {
			continue
		}
		if !now.Before(r.Deadline) {
			upd := *r
			upd.State, upd.Error = cmdFailed, "no acknowledgement before the deadline"
			c.cmdUpdates = append(c.cmdUpdates, &upd)
			b.commandFailed(c, &upd, false, now)
			continue
		}
		resend = append(resend, r)
	}
	if !c.eff.empty() || len(c.cmdUpdates) > 0 || c.next.Online != s.st.Online {
		if err := b.commit(ctx, s, c, now); err != nil {
			return err
		}
	}
	for _, r := range resend {
		if _, ok := s.cmds[r.Cmd.ID]; !ok {
			continue
		}
		r.Attempts++
		r.NextAt = now.Add(b.backoff(r.Attempts))
		b.enqueue(s.info.ID, r)
	}
	return nil
}

func (b *Bridge) backoff(attempts int) time.Duration {
	d := b.cfg.CommandRetry
	for i := 1; i < attempts && d < b.cfg.CommandRetryMax; i++ {
		d *= 2
	}
	return min(d, b.cfg.CommandRetryMax)
}

// commandFailed adds the consequences of a failed command (refused or timed
// out) to c: a reserve fails its booking; an unlock tells the user.
func (b *Bridge) commandFailed(c *change, r *commandRec, refused bool, now time.Time) {
	switch r.Cmd.Action {
	case wire.ActionReserve:
		var eff effects
		if refused {
			c.next, eff = b.m.reserveAcked(&c.next, r.Cmd.BookingID, false, r.Error, now)
		} else {
			c.next, eff = b.m.reserveTimedOut(&c.next, r.Cmd.BookingID, now)
		}
		c.eff.merge(eff)
	case wire.ActionUnlock:
		i := findRes(&c.next, r.Cmd.BookingID)
		if i < 0 {
			return
		}
		res := c.next.Slots[i].Res
		msg := "the station could not unlock the slot; try collecting again"
		c.eff.event(wire.TypeNotification, res.UserID, wire.Notification{Title: "Unlock failed", Message: msg, Level: wire.LevelError, BookingID: res.BookingID})
	default:
		b.log.Warn("bridge: command failed", "station", r.StationID, "id", r.Cmd.ID, "action", r.Cmd.Action, "err", r.Error)
	}
}

func (e *effects) merge(o effects) {
	e.Events = append(e.Events, o.Events...)
	e.Bookings = append(e.Bookings, o.Bookings...)
	e.Commands = append(e.Commands, o.Commands...)
	e.Snapshot = e.Snapshot || o.Snapshot
}
