package stationagent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/stationagent/driver/modbus"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
	"github.com/swapbridge/swapbridge/wire"
)

// AgentVersion is reported in the status message unless WithVersion says
// otherwise.
const AgentVersion = "0.1.0"

// Driver is the hardware seen by the agent: read every slot, and act on one.
// Slot numbers start at 1; SetAvailability with slot 0 acts on the whole
// station. Methods may block on hardware I/O; they are called from the
// agent's main loop only (and from doctor).
type Driver interface {
	ReadSlots(ctx context.Context) ([]wire.Slot, error)
	Unlock(ctx context.Context, slot int) error
	Lock(ctx context.Context, slot int) error
	SetIndicator(ctx context.Context, slot int, on bool) error
	SetAvailability(ctx context.Context, slot int, available bool) error
	Close() error
}

// Option adjusts an Agent.
type Option func(*Agent)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(a *Agent) { a.log = l } }

// WithClock sets the clock used for timestamps, reservation expiry and the
// sim driver (default time.Now).
func WithClock(now func() time.Time) Option { return func(a *Agent) { a.now = now } }

// WithDriver makes the agent use d instead of opening cfg.Driver. The agent
// closes d when Run returns.
func WithDriver(d Driver) Option { return func(a *Agent) { a.drv = d } }

// WithVersion sets the agent_version reported in status.
func WithVersion(v string) Option { return func(a *Agent) { a.version = v } }

// Agent is one station's agent. Create it with New and start it with Run.
// Several agents may run in one process, each with its own data directory.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	drv     Driver
	version string
	running atomic.Bool

	// Set up by Run.
	st        *state
	bootID    string
	inbox     chan paho.Message
	local     chan localReq
	connected chan struct{}
	wake      chan struct{}

	// Owned by the main loop.
	seq      uint64
	lastSent []wire.Slot
	current  []wire.Slot
	res      map[int]Reservation

	mu       sync.Mutex
	info     Status
	stClosed bool
}

// New checks cfg and returns an agent ready to Run. It opens nothing.
func New(cfg Config, opts ...Option) (*Agent, error) {
	cfg.withDefaults()
	a := &Agent{version: AgentVersion}
	for _, o := range opts {
		o(a)
	}
	if a.drv != nil && cfg.Driver == "" {
		cfg.Driver = "custom"
	}
	if err := cfg.validate(a.drv == nil); err != nil {
		return nil, err
	}
	a.cfg = cfg
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.log = a.log.With("station", cfg.StationID)
	return a, nil
}

// Config returns the agent's configuration with defaults applied.
func (a *Agent) Config() Config { return a.cfg }

// BootID returns the current boot id ("" before Run).
func (a *Agent) BootID() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.info.BootID
}

func (a *Agent) openDriver() (Driver, error) {
	switch a.cfg.Driver {
	case DriverSim:
		sc := a.cfg.Sim
		if sc.Seed == 0 {
			h := fnv.New64a()
			h.Write([]byte(a.cfg.StationID))
			sc.Seed = h.Sum64()
		}
		return sim.New(sc, a.now)
	case DriverModbus:
		return modbus.New(a.cfg.Modbus)
	}
	return nil, fmt.Errorf("%w: unknown driver %q", ErrConfig, a.cfg.Driver)
}

// Run runs the agent until ctx is done: it opens the data directory and the
// driver, keeps an MQTT session up, reports telemetry, executes commands and
// serves the local control socket. When ctx is done it publishes an offline
// status, disconnects cleanly, closes everything and returns nil. It returns
// an error at once when it cannot start (locked data dir, driver, socket).
// Run may be called once per Agent.
func (a *Agent) Run(ctx context.Context) (err error) {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("stationagent: Run called twice")
	}
	st, err := openState(a.cfg.DataDir)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.st = st
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.stClosed = true
		a.mu.Unlock()
		st.close()
	}()
	if a.drv == nil {
		if a.drv, err = a.openDriver(); err != nil {
			return fmt.Errorf("driver %s: %w", a.cfg.Driver, err)
		}
	}
	defer a.drv.Close()

	boot, err := a.st.nextBoot()
	if err != nil {
		return fmt.Errorf("boot counter: %w", err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	a.bootID = fmt.Sprintf("%s-%d-%s", a.cfg.StationID, boot, hex.EncodeToString(rnd[:]))
	a.inbox = make(chan paho.Message, 256)
	a.local = make(chan localReq)
	a.connected = make(chan struct{}, 1)
	a.wake = make(chan struct{}, 1)
	if a.res, err = a.st.reservations(); err != nil {
		return fmt.Errorf("reservations: %w", err)
	}
	a.mu.Lock()
	a.info = Status{StationID: a.cfg.StationID, BootID: a.bootID, AgentVersion: a.version, Driver: a.cfg.Driver,
		Broker: a.cfg.Servers()[0], Servers: a.cfg.Servers(), Started: a.now()}
	a.mu.Unlock()
	a.publishReservations()
	a.log.Info("agent starting", "boot_id", a.bootID, "driver", a.cfg.Driver, "server", a.cfg.Server, "data_dir", a.cfg.DataDir)

	var ctrl *controlServer
	if a.cfg.ControlSocket != "off" {
		if ctrl, err = a.startControl(a.cfg.ControlSocket); err != nil {
			return err
		}
		defer ctrl.Close()
	}

	// Restore availability (station first, then slots) and held
	// reservations before the first report.
	avail, err := a.st.availability()
	if err != nil {
		return fmt.Errorf("availability: %w", err)
	}
	if v, ok := avail[0]; ok {
		if err := a.drv.SetAvailability(ctx, 0, v); err != nil {
			a.log.Warn("restore station availability", "err", err)
		}
	}
	for slot, v := range avail {
		if slot == 0 {
			continue
		}
		if err := a.drv.SetAvailability(ctx, slot, v); err != nil {
			a.log.Warn("restore slot availability", "slot", slot, "err", err)
		}
	}
	// Restore held reservations before the first report.
	for slot, r := range a.res {
		if !r.ExpiresAt.IsZero() && !a.now().Before(r.ExpiresAt) {
			continue // released by the first poll
		}
		if err := a.drv.SetIndicator(ctx, slot, true); err != nil {
			a.log.Warn("restore reservation indicator", "slot", slot, "err", err)
		}
	}
	a.publishReservations()
	a.poll(ctx, true)

	sessCtx, stopSess := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { a.connLoop(sessCtx) })
	defer func() {
		stopSess()
		wg.Wait()
		a.log.Info("agent stopped", "boot_id", a.bootID)
	}()

	poll := time.NewTicker(a.cfg.PollInterval)
	defer poll.Stop()
	snap := time.NewTicker(a.cfg.SnapshotInterval)
	defer snap.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			a.poll(ctx, false)
		case <-snap.C:
			a.poll(ctx, true)
		case <-a.connected:
			// A full telemetry right after each connect.
			a.poll(ctx, true)
			snap.Reset(a.cfg.SnapshotInterval)
		case m := <-a.inbox:
			a.handleMessage(ctx, m)
		case r := <-a.local:
			r.reply <- a.handleLocal(ctx, r)
		}
	}
}

// poll reads the driver, expires reservations and queues a full or delta
// telemetry message when needed. Main loop only.
func (a *Agent) poll(ctx context.Context, full bool) {
	slots, err := a.drv.ReadSlots(ctx)
	a.mu.Lock()
	prevErr := a.info.DriverError
	if err != nil {
		a.info.DriverOK = false
		a.info.DriverError = err.Error()
	} else {
		a.info.DriverOK = true
		a.info.DriverError = ""
		a.info.Slots = len(slots)
		a.info.LastRead = a.now()
	}
	a.mu.Unlock()
	if err != nil {
		if prevErr != err.Error() {
			a.log.Warn("driver read failed", "err", err)
		}
		return
	}
	if prevErr != "" {
		a.log.Info("driver read ok again")
	}
	a.current = slots
	a.expireReservations(ctx)
	if len(slots) != len(a.lastSent) {
		full = true
	}
	var out []wire.Slot
	if full {
		out = slots
	} else {
		for i := range slots {
			if !slotEqual(&slots[i], &a.lastSent[i]) {
				out = append(out, slots[i])
			}
		}
		if len(out) == 0 {
			return
		}
	}
	a.lastSent = slots
	a.enqueueTelemetry(full, out)
}

func slotEqual(x, y *wire.Slot) bool {
	return x.Slot == y.Slot && x.Battery() == y.Battery() && x.Occupied() == y.Occupied() && x.SoC == y.SoC &&
		x.SoH == y.SoH && x.TempC == y.TempC && x.VoltageV == y.VoltageV && x.Charging == y.Charging &&
		x.Door == y.Door && x.Locked == y.Locked && x.Fault == y.Fault
}

// enqueueTelemetry writes one telemetry message into the outbox (fsync'd)
// and wakes the sender. Main loop only.
func (a *Agent) enqueueTelemetry(full bool, slots []wire.Slot) {
	if slots == nil {
		slots = []wire.Slot{}
	}
	a.seq++
	seq := a.seq
	payload, err := json.Marshal(wire.Telemetry{BootID: a.bootID, Seq: seq, TS: a.now().UTC(), Full: full, Slots: slots})
	if err != nil {
		a.log.Error("encode telemetry", "err", err)
		return
	}
	compacted, err := a.st.enqueueTelemetry(seq, payload, a.cfg.OutboxLimit, func() (uint64, []byte, error) {
		a.seq++
		all := a.current
		if all == nil {
			all = []wire.Slot{}
		}
		p, err := json.Marshal(wire.Telemetry{BootID: a.bootID, Seq: a.seq, TS: a.now().UTC(), Full: true, Slots: all})
		return a.seq, p, err
	})
	if err != nil {
		a.log.Error("queue telemetry", "seq", seq, "err", err)
		return
	}
	if compacted {
		a.log.Warn("outbox over its bound: queued telemetry compacted into one snapshot", "limit", a.cfg.OutboxLimit, "seq", a.seq)
	}
	a.mu.Lock()
	a.info.LastSeqQueued = a.seq
	a.mu.Unlock()
	a.kick()
}

func (a *Agent) kick() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// expireReservations releases reservations past their expiry. Main loop only.
func (a *Agent) expireReservations(ctx context.Context) {
	now := a.now()
	for slot, r := range a.res {
		if r.ExpiresAt.IsZero() || now.Before(r.ExpiresAt) {
			continue
		}
		if err := a.drv.SetIndicator(ctx, slot, false); err != nil {
			a.log.Warn("expire reservation: indicator", "slot", slot, "err", err)
		}
		err := a.st.update(func(tx *boltTx) error { return deleteReservation(tx, slot) })
		if err != nil {
			a.log.Error("expire reservation", "slot", slot, "err", err)
			continue
		}
		delete(a.res, slot)
		a.log.Info("reservation expired", "slot", slot, "booking_id", r.BookingID)
	}
	a.publishReservations()
}

// publishReservations copies the reservations into the status. Main loop only.
func (a *Agent) publishReservations() {
	list := make([]Reservation, 0, len(a.res))
	for _, r := range a.res {
		list = append(list, r)
	}
	slices.SortFunc(list, func(x, y Reservation) int { return x.Slot - y.Slot })
	a.mu.Lock()
	a.info.Reservations = list
	a.info.slots = slices.Clone(a.current)
	a.mu.Unlock()
}
