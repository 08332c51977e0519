package bridge

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/internal/commitlog"
	"github.com/swapbridge/swapbridge/wire"
)

// station is one station in memory: its state, active bookings and pending
// commands, serialized by mu (taken with Bridge.lockStation). A transition
// is applied to them under mu when its commit is queued (engine.go), so
// they may be ahead of the log by the station's queued commits; the
// commits are durable in that order. A failed commit marks the station
// broken, and the next lockStation reloads it from the log.
type station struct {
	mu       sync.Mutex
	info     commitlog.StationInfo
	st       stationState
	cmds     map[string]*command // pending commands by id
	bookings map[string]*booking // active bookings by id
	lastSnap time.Time           // last snapshot request (throttle)
	budget   eventBudget         // the station's event budget (budget.go)
	// reopen: the next commit is the first since the station was (re)loaded
	// (commitlog.Commit.Reopen).
	reopen bool
	// reconnected is set by StationConnected; the next tick resends every
	// pending command.
	reconnected atomic.Bool
	// removed is set under mu once DeleteStation queued the station's
	// removal: every later transition fails with ErrStationNotFound.
	removed atomic.Bool

	// broken is set when a commit of the station failed: the log refuses
	// the station's later queued commits, and the next lockStation waits
	// for them to be answered and reloads the station.
	broken atomic.Bool
	// pmu guards the queue of commits appended and not yet answered. It is
	// taken on the log's goroutine and never held while waiting.
	pmu      sync.Mutex
	inflight int
	tail     *queued // the newest queued commit, nil when none is queued
}

func newStationCache(info commitlog.StationInfo) *station {
	return &station{info: info, reopen: true, cmds: map[string]*command{}, bookings: map[string]*booking{}}
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
	info, err := b.cat.StationInfo(sid)
	if errors.Is(err, commitlog.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrStationNotFound, sid)
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: station %s: %w", sid, err)
	}
	// Provisioned since Start: its records (none on a single node; on a
	// cluster, perhaps another node's) are loaded like Start's.
	ns := newStationCache(info)
	err = b.log.Load([]string{sid}, func(r Reader) error {
		cmds, err := pendingCommands(r, sid)
		if err != nil {
			return err
		}
		return b.load(r, ns, cmds[sid], b.cfg.Clock())
	})
	if err != nil {
		return nil, fmt.Errorf("bridge: station %s: load: %w", sid, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s := b.stations[sid]; s != nil {
		return s, nil
	}
	for _, bk := range ns.bookings {
		b.active.add(bk.UserID, bk.ID)
	}
	b.stations[sid] = ns
	return ns, nil
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

// lockStation locks s.mu. If a commit of s failed, it first waits for the
// station's queued commits to be answered and reloads s from the log; if
// that fails the station stays broken (its commits keep failing) until a
// later lockStation succeeds.
func (b *Bridge) lockStation(s *station) {
	s.mu.Lock()
	if s.broken.Load() {
		b.reload(s)
	}
}

// reload replaces s's state, bookings and commands (s.mu held) by what the
// log holds, once the station's queued commits are answered.
func (b *Bridge) reload(s *station) {
	s.drain()
	err := b.log.Load([]string{s.info.ID}, func(r Reader) error {
		cmds, err := pendingCommands(r, s.info.ID)
		if err != nil {
			return err
		}
		return b.load(r, s, cmds[s.info.ID], b.cfg.Clock())
	})
	if err != nil {
		b.lg.Warn("bridge: reload station after a failed commit", "station", s.info.ID, "error", err)
		return
	}
	s.reopen = true
	s.broken.Store(false)
	b.lg.Info("bridge: station reloaded after a failed commit", "station", s.info.ID)
}

// load sets s's state, active bookings (those its reservations name) and
// pending commands from r (a Log.Load snapshot). s.mu is held, or s is not
// shared yet.
func (b *Bridge) load(rd Reader, s *station, cmds []*command, now time.Time) error {
	st, err := b.loadState(rd, s.info)
	if err != nil {
		return err
	}
	bookings := map[string]*booking{}
	for i := range st.Slots {
		res := &st.Slots[i].Res
		if !res.active() {
			continue
		}
		raw, err := rd.Record(commitlog.KindBooking, res.BookingID)
		if errors.Is(err, commitlog.ErrNotFound) {
			b.lg.Warn("bridge: reservation without its booking record", "station", s.info.ID, "booking", res.BookingID)
			continue
		}
		if err != nil {
			return fmt.Errorf("station %s: booking %s: %w", s.info.ID, res.BookingID, err)
		}
		bk, err := decodeBooking(raw)
		if err != nil {
			return fmt.Errorf("station %s: booking %s: decode: %w", s.info.ID, res.BookingID, err)
		}
		bookings[bk.ID] = bk
	}
	pending := make(map[string]*command, len(cmds))
	for _, c := range cmds {
		c.NextAt = now
		if c.Deadline.Before(now.Add(b.cfg.CommandRetry)) {
			c.Deadline = now.Add(b.cfg.CommandRetry)
		}
		pending[c.Cmd.ID] = c
	}
	s.st, s.bookings, s.cmds = st, bookings, pending
	return nil
}

// loadState reads a station's stored state; a station with none yet gets a
// fresh one.
func (b *Bridge) loadState(r Reader, info commitlog.StationInfo) (stationState, error) {
	var st stationState
	raw, err := r.Record(commitlog.KindStationState, info.ID)
	switch {
	case errors.Is(err, commitlog.ErrNotFound):
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
		st.Slots = append(st.Slots, make([]slotState, info.Slots-len(st.Slots))...)
	}
	return st, nil
}

// pendingCommands reads the pending command records from r, by station (of
// station sid only, unless sid is empty).
func pendingCommands(r Reader, sid string) (map[string][]*command, error) {
	out := map[string][]*command{}
	err := r.Records(commitlog.KindCommand, "", func(_ string, value []byte) bool {
		c, err := decodeCommand(value)
		if err != nil || !c.pending() || (sid != "" && c.StationID != sid) {
			return true
		}
		out[c.StationID] = append(out[c.StationID], c)
		return true
	})
	return out, err
}
