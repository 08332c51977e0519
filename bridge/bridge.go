package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/swapbridge/swapbridge/internal/commitlog"
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
	// ErrBadRequest: an argument is invalid; the wrapping error says which
	// and why, in words fit for the caller.
	ErrBadRequest = errors.New("bridge: bad request")
	// ErrUserNotFound: no user has that id.
	ErrUserNotFound = errors.New("bridge: user not found")
	// ErrClosed: the bridge was closed (or not started).
	ErrClosed = errors.New("bridge: closed")
)

// CommandSender delivers a command payload to a station (QoS 1 on its cmd
// topic). The broker implements it. It should not block for long; the bridge
// calls it from its own sender goroutine only.
type CommandSender interface {
	SendToStation(sid string, payload []byte) error
}

// Bridge turns station messages into state, events and bookings. See the
// package documentation.
type Bridge struct {
	cfg  Config
	m    machine
	log  Log
	cat  Catalog
	cmds CommandSender
	lg   *slog.Logger

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
	// tickedOnce: the timer loop ran once.
	tickedOnce atomic.Bool
}

// New builds a Bridge over a commit log and the station catalogue (st,
// e.g. a *store.Store). cmds delivers commands to stations. Call Start
// before use.
func New(cfg Config, st Storage, cmds CommandSender) (*Bridge, error) {
	if st == nil {
		return nil, fmt.Errorf("%w: nil storage", ErrBadRequest)
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
		log:     st,
		cat:     st,
		cmds:    cmds,
		lg:      cfg.Logger,
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

// Start loads stations, their state, active bookings and pending commands
// from the log and starts the sender and timer goroutines. Timers (hold
// expiry, retries, liveness) resume from the stored deadlines.
func (b *Bridge) Start(ctx context.Context) error {
	err := fmt.Errorf("bridge: already started")
	b.startOnce.Do(func() { err = b.start(ctx) })
	return err
}

func (b *Bridge) start(ctx context.Context) error {
	if b.closed() {
		return ErrClosed
	}
	infos, err := b.cat.StationInfos()
	if err != nil {
		return fmt.Errorf("bridge: load stations: %w", err)
	}
	now := b.cfg.Clock()
	sids := make([]string, len(infos))
	for i, info := range infos {
		sids[i] = info.ID
	}
	err = b.log.Load(sids, func(r Reader) error {
		cmds, err := pendingCommands(r, "")
		if err != nil {
			return fmt.Errorf("bridge: load commands: %w", err)
		}
		for _, info := range infos {
			s := newStationCache(info)
			if err := b.load(r, s, cmds[info.ID], now); err != nil {
				return fmt.Errorf("bridge: load state: %w", err)
			}
			for _, bk := range s.bookings {
				b.active.add(bk.UserID, bk.ID)
			}
			b.stations[info.ID] = s
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := b.purgeCommands(ctx, now); err != nil {
		return err
	}
	b.wg.Add(2)
	go b.sender()
	go b.ticker()
	return nil
}

// Close stops the goroutines and waits for them. It is idempotent. It does
// not close the log.
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

// wait returns the outcome sent on ch, or ctx's error if it ends first
// (the commit goes on; its effects still follow it).
func wait(ctx context.Context, ch <-chan error) error {
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// bookingRecord reads a booking from the log.
func (b *Bridge) bookingRecord(id string) (wire.Booking, error) {
	if id == "" || len(id) > 64 {
		return wire.Booking{}, fmt.Errorf("%w: %q", ErrBookingNotFound, id)
	}
	raw, err := b.log.Record(commitlog.KindBooking, id)
	if errors.Is(err, commitlog.ErrNotFound) {
		return wire.Booking{}, fmt.Errorf("%w: %s", ErrBookingNotFound, id)
	}
	if err != nil {
		return wire.Booking{}, fmt.Errorf("bridge: booking %s: %w", id, err)
	}
	bk, err := decodeBooking(raw)
	if err != nil {
		return wire.Booking{}, fmt.Errorf("bridge: booking %s: decode: %w", id, err)
	}
	return bk.Booking, nil
}
