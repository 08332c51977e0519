package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

// maxErrorSamples bounds the error messages kept for the report.
const maxErrorSamples = 10

// runner holds one scenario run: the target, the simulated stations, the
// sockets and the counters.
type runner struct {
	cfg    Config
	tgt    *target
	prefix string // station and user id prefix, unique per run

	stations []*station
	byID     map[string]*station
	ws       []*wsClient
	users    []*user

	lat    atomic.Pointer[Histogram] // publish→frame of the current step
	ackLat atomic.Pointer[Histogram] // publish→PUBACK of the current step

	acked         atomic.Uint64 // measured steps acknowledged
	sent          atomic.Uint64
	throttled     atomic.Uint64
	baseDelivered atomic.Uint64 // baseline: steps consumed

	errs       atomic.Uint64
	errMu      sync.Mutex
	errSamples []string
	cmds       map[string]*atomic.Uint64

	wg       sync.WaitGroup // helper goroutines of stations
	progress progressState
	// notify, when set, gets a token (without blocking) for every matched
	// frame; benchmarks wait on it.
	notify chan struct{}
}

type progressState struct {
	phase atomic.Pointer[string]
	start atomic.Int64
}

func newRunner(cfg Config, tgt *target, prefix string) *runner {
	r := &runner{cfg: cfg, tgt: tgt, prefix: prefix, byID: make(map[string]*station)}
	r.ackLat.Store(new(Histogram))
	r.lat.Store(new(Histogram))
	r.cmds = make(map[string]*atomic.Uint64)
	for _, a := range []string{wire.ActionReserve, wire.ActionRelease, wire.ActionUnlock, wire.ActionSetAvailability, wire.ActionSnapshot} {
		r.cmds[a] = new(atomic.Uint64)
	}
	if tgt.base != nil {
		tgt.base.run.Store(r)
	}
	return r
}

func (r *runner) latency() *Histogram { return r.lat.Load() }

func (r *runner) errorf(format string, a ...any) {
	r.errs.Add(1)
	r.errMu.Lock()
	if len(r.errSamples) < maxErrorSamples {
		r.errSamples = append(r.errSamples, fmt.Sprintf(format, a...))
	}
	r.errMu.Unlock()
}

func (r *runner) countCommand(action string) {
	if c := r.cmds[action]; c != nil {
		c.Add(1)
	}
}

func (r *runner) goStation(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

func (r *runner) setPhase(p string) {
	r.progress.phase.Store(&p)
	r.progress.start.Store(time.Now().UnixNano())
}

// parallel runs f(i) for i in [0,n) on up to k goroutines and returns the
// first error; it stops early when ctx ends.
func parallel(ctx context.Context, n, k int, f func(i int) error) error {
	var (
		next  atomic.Int64
		first atomic.Pointer[error]
		wg    sync.WaitGroup
	)
	for w := 0; w < min(k, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil || first.Load() != nil {
					return
				}
				if err := f(i); err != nil {
					first.CompareAndSwap(nil, &err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return ctx.Err()
}

// provision creates n stations (toggle slots take part in the telemetry
// walk; restSoC is the SoC of the others) through the admin API, or
// locally for the baseline.
func (r *runner) provision(ctx context.Context, n, toggle int, restSoC float64) error {
	r.stations = make([]*station, n)
	for i := range r.stations {
		st := &station{idx: i, id: fmt.Sprintf("%s-s%05d", r.prefix, i), slots: r.cfg.Slots, toggle: toggle, restSoC: restSoC, run: r, secret: "bench"}
		r.stations[i] = st
		r.byID[st.id] = st
	}
	if r.tgt.isBaseline() {
		return nil
	}
	return parallel(ctx, n, 16, func(i int) error {
		st := r.stations[i]
		var resp wire.CreateStationResponse
		err := retryLimited(ctx, func() (err error) {
			resp, err = r.tgt.admin.CreateStation(ctx, wire.CreateStationRequest{
				ID: st.id, Name: "swapbench " + st.id, Slots: st.slots,
				Lat: 48 + rand.Float64(), Lon: 11 + rand.Float64(),
			})
			return err
		})
		if err != nil {
			return fmt.Errorf("provision station %s: %w", st.id, err)
		}
		st.secret = resp.Secret
		return nil
	})
}

// connectAll connects every station (status online and a full telemetry,
// each acknowledged).
func (r *runner) connectAll(ctx context.Context) error {
	return parallel(ctx, len(r.stations), r.cfg.Connect, func(i int) error {
		return r.stations[i].connect(ctx, r.tgt.mqttAddr, 30*time.Second)
	})
}

// connectWS opens cfg.WS station sockets (WSAll of them on every station,
// the others spread over the stations) and one notification socket per
// user.
func (r *runner) connectWS(ctx context.Context) error {
	if r.tgt.isBaseline() {
		return nil
	}
	n := r.cfg.WS + len(r.users)
	r.ws = make([]*wsClient, n)
	return parallel(ctx, n, 16, func(i int) error {
		var (
			c   *wsClient
			err error
		)
		switch {
		case i < r.cfg.WSAll:
			c, err = r.dialWS(ctx, wsAll, nil, nil)
		case i < r.cfg.WS:
			c, err = r.dialWS(ctx, wsStation, r.stations[(i-r.cfg.WSAll)%len(r.stations)], nil)
		default:
			c, err = r.dialWS(ctx, wsUser, nil, r.users[i-r.cfg.WS])
		}
		if err != nil {
			return err
		}
		r.ws[i] = c
		return nil
	})
}

// closeAll closes every socket and station connection and waits for the
// station helper goroutines.
func (r *runner) closeAll() {
	var wg sync.WaitGroup
	for _, c := range r.ws {
		if c != nil {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
	}
	wg.Wait()
	parallel(context.Background(), len(r.stations), 64, func(i int) error {
		r.stations[i].disconnect(true)
		return nil
	})
	r.wg.Wait()
	if r.tgt.base != nil {
		r.tgt.base.run.CompareAndSwap(r, nil)
	}
}

func (r *runner) proc() (ProcStat, bool) {
	if r.tgt.pid <= 0 {
		return ProcStat{}, false
	}
	ps, err := ReadProc(r.tgt.pid)
	if err != nil {
		r.errorf("%v", err)
		return ps, false
	}
	return ps, true
}

// totals sums expected and delivered frames over the sockets (for the
// baseline: over its consumer).
func (r *runner) totals() (expected, delivered, unmatched uint64) {
	if r.tgt.isBaseline() {
		return r.acked.Load(), r.baseDelivered.Load(), 0
	}
	for _, c := range r.ws {
		if c == nil || c.kind == wsUser {
			continue
		}
		expected += c.expected()
		delivered += c.delivered.Load()
		unmatched += c.unmatched.Load()
	}
	return
}

func (r *runner) inflight() int {
	n := 0
	for _, st := range r.stations {
		n += int(st.inflight.Load())
	}
	return n
}

// waitFor polls cond every 10 ms until it holds or d passed.
func waitFor(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return cond()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	return true
}

// pace calls send rate times per second, spread evenly, until stop is
// closed. It never bursts more than one second of backlog.
func pace(rate float64, stop <-chan struct{}, send func()) {
	start := time.Now()
	n := 0.0
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		due := rate * time.Since(start).Seconds()
		if due-n > rate {
			n = due - rate
		}
		for n+1 <= due {
			send()
			n++
			select {
			case <-stop:
				return
			default:
			}
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// measure sends telemetry steps at rate for d, then waits for the
// acknowledgements and the frames, and returns the step's figures.
func (r *runner) measure(ctx context.Context, rate float64, d time.Duration) StepResult {
	lat := new(Histogram)
	r.lat.Store(lat)
	ackLat := new(Histogram)
	r.ackLat.Store(ackLat)
	exp0, del0, un0 := r.totals()
	acked0, sent0, thr0, err0 := r.acked.Load(), r.sent.Load(), r.throttled.Load(), r.errs.Load()
	p0, haveProc := r.proc()
	r.setPhase(fmt.Sprintf("%s %.0f msg/s", r.cfg.Scenario, rate))

	stop := make(chan struct{})
	var wg sync.WaitGroup
	workers := max(1, min(runtime.GOMAXPROCS(0), len(r.stations)))
	window := int32(r.cfg.Window)
	for w := 0; w < workers; w++ {
		var mine []*station
		for i := w; i < len(r.stations); i += workers {
			mine = append(mine, r.stations[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := 0
			pace(rate/float64(workers), stop, func() {
				st := mine[i]
				i = (i + 1) % len(mine)
				switch err := st.sendStep(window); {
				case err == nil:
					r.sent.Add(1)
				case errors.Is(err, errThrottled), errors.Is(err, errNotConnected):
					r.throttled.Add(1)
				default:
					r.errorf("station %s: publish: %v", st.id, err)
				}
			})
		}()
	}
	start := time.Now()
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	ackedAtStop := r.acked.Load()
	r.setPhase("draining")
	if !waitFor(ctx, 30*time.Second, func() bool { return r.inflight() == 0 }) {
		r.errorf("%d publishes still unacknowledged 30s after the step", r.inflight())
	}
	waitFor(ctx, 15*time.Second, func() bool {
		e, dl, _ := r.totals()
		return dl-del0 >= e-exp0
	})
	exp1, del1, un1 := r.totals()
	res := StepResult{
		Rate: rate, DurationS: elapsed.Seconds(),
		Sent: r.sent.Load() - sent0, Throttled: r.throttled.Load() - thr0,
		Acked: r.acked.Load() - acked0, AckRate: float64(ackedAtStop-acked0) / elapsed.Seconds(),
		Expected: exp1 - exp0, Delivered: del1 - del0, Unmatched: un1 - un0,
		Latency: lat.Summary(), AckLatency: ackLat.Summary(),
		Errors: r.errs.Load() - err0,
	}
	if p1, ok := r.proc(); ok && haveProc {
		res.CPUSeconds = p1.CPUSeconds - p0.CPUSeconds
	}
	res.FramesPerS = float64(res.Delivered) / elapsed.Seconds()
	if res.Delivered > 0 && res.CPUSeconds > 0 {
		res.CPUPerMFrames = res.CPUSeconds / (float64(res.Delivered) / 1e6)
	}
	var why []string
	if res.Errors > 0 {
		why = append(why, fmt.Sprintf("%d errors", res.Errors))
	}
	if res.Delivered < res.Expected {
		why = append(why, fmt.Sprintf("delivered %d < expected %d", res.Delivered, res.Expected))
	}
	if res.AckRate < 0.95*rate {
		why = append(why, fmt.Sprintf("acked %.0f/s < 95%% of offered", res.AckRate))
	}
	if p99 := time.Duration(res.Latency.P99 * float64(time.Millisecond)); p99 > r.cfg.MaxP99 {
		why = append(why, fmt.Sprintf("p99 %.1fms > %v", res.Latency.P99, r.cfg.MaxP99))
	}
	res.Good = len(why) == 0
	res.Why = joinWhy(why)
	return res
}

func joinWhy(s []string) string {
	out := ""
	for i, w := range s {
		if i > 0 {
			out += ", "
		}
		out += w
	}
	return out
}

// progressLoop prints a status line every second until stop.
// start runs the progress loop until the returned stop function is called;
// stop also closes every connection of the run.
func (r *runner) start(w io.Writer) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { r.progressLoop(w, done) })
	return func() {
		close(done)
		wg.Wait()
		r.closeAll()
	}
}

func (r *runner) progressLoop(w io.Writer, stop <-chan struct{}) {
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastAcked uint64
	last := time.Now()
	for {
		select {
		case <-stop:
			fmt.Fprint(w, "\r\033[K")
			return
		case now := <-t.C:
			a := r.acked.Load()
			rate := float64(a-lastAcked) / now.Sub(last).Seconds()
			lastAcked, last = a, now
			phase := ""
			if p := r.progress.phase.Load(); p != nil {
				phase = *p
			}
			el := time.Duration(now.UnixNano() - r.progress.start.Load()).Round(time.Second)
			e, d, _ := r.totals()
			l := r.latency()
			fmt.Fprintf(w, "\r\033[K[%s %v] acked %d (%.0f/s) frames %d/%d p99 %.1fms errors %d",
				phase, el, a, rate, d, e, float64(l.Quantile(0.99))/1e6, r.errs.Load())
		}
	}
}

// finish fills the report's common fields.
func (r *runner) finish(rep *Report) {
	rep.Errors = r.errs.Load()
	r.errMu.Lock()
	rep.ErrorSamples = append([]string(nil), r.errSamples...)
	r.errMu.Unlock()
	rep.Commands = make(map[string]uint64)
	for k, v := range r.cmds {
		if n := v.Load(); n > 0 {
			rep.Commands[k] = n
		}
	}
	if rep.Errors > 0 {
		rep.Failures = append(rep.Failures, fmt.Sprintf("%d errors", rep.Errors))
	}
	if ps, ok := r.proc(); ok {
		rep.Server = &ps
		if rep.Memory != nil {
			rep.Memory.PeakKB = ps.PeakRSSKB
		}
	}
}

// newUserClient returns an API client with the user's token.
func (r *runner) newUserClient(u *user) *client.Client {
	c := client.New(r.tgt.httpBase, u.token)
	c.HTTP = r.tgt.hc
	return c
}
