package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

// Run runs cfg's scenario against its target (the baseline when
// cfg.Baseline) and returns the report. It blocks until the run is over or
// ctx ends; everything it started is stopped before it returns. A report
// with Failures is returned with a nil error: failures are results.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	tgt, err := openTarget(ctx, &cfg, cfg.Baseline)
	if err != nil {
		return nil, err
	}
	defer tgt.closeFn()
	return runOn(ctx, cfg, tgt)
}

// RunCompare runs the scenario against the baseline, then against the
// target, and returns both reports (ours, baseline).
func RunCompare(ctx context.Context, cfg Config) (ours, base *Report, err error) {
	bc := cfg
	bc.Baseline = true
	if base, err = Run(ctx, bc); err != nil {
		return nil, nil, fmt.Errorf("baseline: %w", err)
	}
	cfg.Baseline = false
	ours, err = Run(ctx, cfg)
	return ours, base, err
}

func runOn(ctx context.Context, cfg Config, tgt *target) (*Report, error) {
	rep := &Report{Scenario: cfg.Scenario, Target: tgt.name, Machine: machine(), Params: Params{
		Stations: cfg.Stations, Slots: cfg.Slots, Rate: cfg.Rate, DurationS: cfg.Duration.Seconds(),
		WS: cfg.WS, WSAll: cfg.WSAll, Window: cfg.Window,
	}}
	if tgt.isBaseline() {
		rep.Params.WS, rep.Params.WSAll = 0, 0
	}
	var err error
	switch cfg.Scenario {
	case Steady, Ramp, Fanout:
		if cfg.Scenario == Fanout && tgt.isBaseline() {
			return nil, errors.New("bench: the fanout scenario needs swapd (the bare broker has no WebSocket)")
		}
		err = runTelemetry(ctx, cfg, tgt, rep)
	case Storm:
		rep.Params.StormWindow = cfg.StormWindow.Seconds()
		rep.Params.Rate, rep.Params.DurationS = 0, 0
		err = runStorm(ctx, cfg, tgt, rep)
	case Rush:
		if tgt.isBaseline() {
			return nil, errors.New("bench: the rush scenario needs swapd (the bare broker has no bookings)")
		}
		rep.Params.Users, rep.Params.BookingRate, rep.Params.Rate = cfg.Users, cfg.BookingRate, 0
		err = runRush(ctx, cfg, tgt, rep)
	case Smoke:
		err = runSmoke(ctx, cfg, tgt, rep)
	}
	return rep, err
}

func runPrefix(scenario string) string { return "bench" + randomHex(3) + scenario[:2] }

// setupStations provisions and connects the stations, then the sockets, and
// records the server's memory along the way.
func setupStations(ctx context.Context, r *runner, rep *Report, toggle int, restSoC float64) error {
	r.setPhase("provisioning")
	t := time.Now()
	if err := r.provision(ctx, r.cfg.Stations, toggle, restSoC); err != nil {
		return err
	}
	for i := range r.users {
		u := r.users[i]
		var resp wire.CreateUserResponse
		err := retryLimited(ctx, func() (err error) {
			resp, err = r.tgt.admin.CreateUser(ctx, u.id)
			return err
		})
		if err != nil {
			return fmt.Errorf("provision user %s: %w", u.id, err)
		}
		u.token = resp.Token
	}
	rep.Setup.ProvisionS = time.Since(t).Seconds()
	p0, haveProc := r.proc()
	h0, haveHeap := r.goMemory(ctx)
	l0, haveLive := r.liveMemory(ctx)
	r.setPhase("connecting stations")
	t = time.Now()
	if err := r.connectAll(ctx); err != nil {
		return err
	}
	rep.Setup.ConnectS = time.Since(t).Seconds()
	p1, _ := r.proc()
	h1, _ := r.goMemory(ctx)
	l1, _ := r.liveMemory(ctx)
	r.setPhase("connecting websockets")
	t = time.Now()
	if err := r.connectWS(ctx); err != nil {
		return err
	}
	rep.Setup.WSConnectS = time.Since(t).Seconds()
	if p2, ok := r.proc(); ok && haveProc {
		m := &Memory{BaseKB: p0.RSSKB, StationsKB: p1.RSSKB, WSKB: p2.RSSKB, IncludesClient: r.tgt.pid == os.Getpid()}
		m.PerStationKB = float64(p1.AnonKB-p0.AnonKB) / float64(len(r.stations))
		if n := len(r.ws); n > 0 {
			m.PerWSClientKB = float64(p2.AnonKB-p1.AnonKB) / float64(n)
		}
		rep.Memory = m
		if h2, ok := r.goMemory(ctx); ok && haveHeap {
			m.HeapPerStationKB = float64(h1-h0) / 1024 / float64(len(r.stations))
			if n := len(r.ws); n > 0 {
				m.HeapPerWSClientKB = float64(h2-h1) / 1024 / float64(n)
			}
		}
		if l2, ok := r.liveMemory(ctx); ok && haveLive {
			m.LivePerStationKB = float64(l1-l0) / 1024 / float64(len(r.stations))
			if n := len(r.ws); n > 0 {
				m.LivePerWSClientKB = float64(l2-l1) / 1024 / float64(n)
			}
		}
	}
	return writeHeapProfile(r.cfg.HeapProfile)
}

// writeHeapProfile writes this process's heap profile after a GC; "" does
// nothing.
func writeHeapProfile(path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	return nil
}

// goMemory reads the server's Go heap and stack in use from its /metrics
// (go_memstats_heap_inuse_bytes + go_memstats_stack_inuse_bytes).
func (r *runner) goMemory(ctx context.Context) (int64, bool) {
	return r.metricsSum(ctx, "go_memstats_heap_inuse_bytes ", "go_memstats_stack_inuse_bytes ")
}

// liveMemory forces a garbage collection in the server (GET
// /debug/pprof/heap?gc=1 with the admin token; swapd needs pprof: true)
// and then reads its live heap and stacks in use from /metrics
// (go_memstats_heap_alloc_bytes + go_memstats_stack_inuse_bytes). The
// collection also shrinks idle goroutine stacks. false: not available.
func (r *runner) liveMemory(ctx context.Context) (int64, bool) {
	if r.tgt.httpBase == "" || r.tgt.token == "" {
		return 0, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.tgt.httpBase+"/debug/pprof/heap?gc=1", nil)
	if err != nil {
		return 0, false
	}
	req.Header.Set("Authorization", "Bearer "+r.tgt.token)
	resp, err := r.tgt.hc.Do(req)
	if err != nil {
		return 0, false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, false
	}
	return r.metricsSum(ctx, "go_memstats_heap_alloc_bytes ", "go_memstats_stack_inuse_bytes ")
}

// metricsSum adds up the named gauges (each name with its trailing space)
// of the server's /metrics; false unless all were found.
func (r *runner) metricsSum(ctx context.Context, names ...string) (int64, bool) {
	if r.tgt.httpBase == "" {
		return 0, false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.tgt.httpBase+"/metrics", nil)
	if err != nil {
		return 0, false
	}
	resp, err := r.tgt.hc.Do(req)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	var total float64
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, name := range names {
			if v, ok := strings.CutPrefix(line, name); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					total += f
					found++
				}
			}
		}
	}
	return int64(total), found == len(names)
}

// runTelemetry is steady (one step at cfg.Rate) and ramp and fanout (steps
// up from cfg.Rate until one is not good).
func runTelemetry(ctx context.Context, cfg Config, tgt *target, rep *Report) error {
	r := newRunner(cfg, tgt, runPrefix(cfg.Scenario))
	defer r.start(cfg.Progress)()
	toggle := min(cfg.Slots, 8)
	if err := setupStations(ctx, r, rep, toggle, 60); err != nil {
		return err
	}
	if cfg.Scenario == Steady {
		s := r.measure(ctx, cfg.Rate, cfg.Duration)
		rep.Steps = append(rep.Steps, s)
		if s.Delivered < s.Expected {
			rep.Failures = append(rep.Failures, fmt.Sprintf("delivered %d < expected %d", s.Delivered, s.Expected))
		}
	} else {
		for rate := cfg.Rate; rate <= cfg.MaxRate && ctx.Err() == nil; rate += cfg.RampStep {
			s := r.measure(ctx, rate, cfg.StepDuration)
			rep.Steps = append(rep.Steps, s)
			if !s.Good {
				break
			}
			rep.LastGoodRate = rate
			if cfg.Scenario == Fanout {
				rep.Fanout = &FanoutResult{Sockets: cfg.WSAll, Rate: rate, FramesPerS: s.FramesPerS, CPUPerMFrames: s.CPUPerMFrames, P99: s.Latency.P99}
			}
		}
	}
	r.finish(rep)
	return ctx.Err()
}

// runStorm connects every station, disconnects them all, and reconnects
// each at a uniformly spread moment within cfg.StormWindow with a new boot
// id and its full snapshot, while HTTP probes measure the API.
func runStorm(ctx context.Context, cfg Config, tgt *target, rep *Report) error {
	r := newRunner(cfg, tgt, runPrefix(cfg.Scenario))
	defer r.start(cfg.Progress)()
	if err := setupStations(ctx, r, rep, 0, 95); err != nil {
		return err
	}
	r.setPhase("disconnecting")
	parallel(ctx, len(r.stations), 64, func(i int) error {
		r.stations[i].disconnect(true)
		return nil
	})
	res := &StormResult{Stations: len(r.stations), WindowS: cfg.StormWindow.Seconds()}
	rep.Storm = res
	var frames0 uint64
	for _, c := range r.ws {
		frames0 += c.frames.Load()
	}
	p0, haveProc := r.proc()

	// HTTP probes: single stations at HTTPRate, the whole list once a
	// second.
	probeStop := make(chan struct{})
	var probes sync.WaitGroup
	var getLat, listLat Histogram
	var httpErrs atomic.Uint64
	if !tgt.isBaseline() {
		probe := func(h *Histogram, path string) {
			t := time.Now()
			err := tgt.admin.Do(ctx, http.MethodGet, path, nil, nil)
			if err != nil {
				if ctx.Err() == nil {
					httpErrs.Add(1)
					r.errorf("GET %s: %v", path, err)
				}
				return
			}
			h.Record(time.Since(t))
		}
		workers := 8
		for w := 0; w < workers; w++ {
			probes.Add(1)
			go func() {
				defer probes.Done()
				pace(cfg.HTTPRate/float64(workers), probeStop, func() {
					probe(&getLat, "/api/stations/"+r.stations[rand.IntN(len(r.stations))].id)
				})
			}()
		}
		probes.Add(1)
		go func() {
			defer probes.Done()
			pace(1, probeStop, func() { probe(&listLat, "/api/stations") })
		}()
	}

	r.setPhase("storm")
	var recon Histogram
	var done, retries atomic.Int64
	order := rand.Perm(len(r.stations))
	start := time.Now()
	work := make(chan int, len(order))
	var wg sync.WaitGroup
	for w := 0; w < min(512, len(order)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				st := r.stations[order[k]]
				due := start.Add(time.Duration(float64(cfg.StormWindow) * float64(k) / float64(len(order))))
				if d := time.Until(due); d > 0 {
					t := time.NewTimer(d)
					select {
					case <-t.C:
					case <-ctx.Done():
						t.Stop()
						return
					}
				}
				var err error
				for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
					if attempt > 0 {
						retries.Add(1)
					}
					if err = st.connect(ctx, tgt.mqttAddr, 30*time.Second); err == nil {
						break
					}
					st.disconnect(false)
				}
				if err != nil {
					r.errorf("storm: station %s: %v", st.id, err)
					continue
				}
				recon.Record(time.Since(due))
				done.Add(1)
			}
		}()
	}
	for k := range order {
		work <- k
	}
	close(work)
	wg.Wait()
	res.TookS = time.Since(start).Seconds()
	close(probeStop)
	probes.Wait()
	res.Reconnected, res.Retries = int(done.Load()), int(retries.Load())
	res.Reconnect, res.HTTP, res.HTTPList, res.HTTPErrors = recon.Summary(), getLat.Summary(), listLat.Summary(), httpErrs.Load()
	for _, c := range r.ws {
		res.Frames += c.frames.Load()
	}
	res.Frames -= frames0
	if p1, ok := r.proc(); ok && haveProc {
		res.CPUSeconds = p1.CPUSeconds - p0.CPUSeconds
	}
	if res.Reconnected < res.Stations {
		rep.Failures = append(rep.Failures, fmt.Sprintf("only %d of %d stations reconnected with their snapshot acknowledged", res.Reconnected, res.Stations))
	}
	r.finish(rep)
	return ctx.Err()
}

// runRush: users book at cfg.BookingRate per second in total at stations
// with few batteries; the stations acknowledge reserve at once; each
// booking is cancelled once ready, which gives its battery back.
func runRush(ctx context.Context, cfg Config, tgt *target, rep *Report) error {
	r := newRunner(cfg, tgt, runPrefix(cfg.Scenario))
	r.users = make([]*user, cfg.Users)
	for i := range r.users {
		r.users[i] = &user{id: fmt.Sprintf("%s-u%04d", r.prefix, i)}
	}
	defer r.start(cfg.Progress)()
	if err := setupStations(ctx, r, rep, 0, 95); err != nil {
		return err
	}
	res := &RushResult{}
	rep.Rush = res
	var (
		requested, created, noBattery, confirmed, ready, cancelled atomic.Uint64
		confirmLat, readyLat, httpLat                              Histogram
	)
	p0, haveProc := r.proc()
	r.setPhase("rush")
	tokens := make(chan struct{}, len(r.users))
	runStop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pace(cfg.BookingRate, runStop, func() {
			select {
			case tokens <- struct{}{}:
			default: // every user busy: the offered rate is not reached
			}
		})
	}()
	book := func(u *user, api *client.Client) {
		st := r.stations[rand.IntN(len(r.stations))]
		requested.Add(1)
		t0 := time.Now()
		b, err := api.Book(ctx, st.id)
		if err != nil {
			if client.IsCode(err, "no_battery_available") {
				noBattery.Add(1)
			} else if client.IsCode(err, "rate_limited") {
				r.errorf("the server rate-limits this address (run swapd with limits.http_rate: -1): %v", err)
			} else if ctx.Err() == nil {
				r.errorf("book at %s: %v", st.id, err)
			}
			return
		}
		httpLat.Record(time.Since(t0))
		created.Add(1)
		pb := u.get(b.ID)
		defer u.forget(b.ID)
		t := time.NewTimer(15 * time.Second)
		select {
		case <-pb.readyCh:
			t.Stop()
		case <-t.C:
			r.errorf("booking %s at %s: not ready within 15s", b.ID, st.id)
		case <-ctx.Done():
			t.Stop()
			return
		}
		u.mu.Lock()
		c, rd := pb.confirmed, pb.ready
		u.mu.Unlock()
		if !c.IsZero() {
			confirmed.Add(1)
			confirmLat.Record(c.Sub(t0))
		}
		if !rd.IsZero() {
			ready.Add(1)
			readyLat.Record(rd.Sub(t0))
		}
		if _, err := api.Cancel(ctx, b.ID); err != nil {
			if ctx.Err() == nil {
				r.errorf("cancel %s: %v", b.ID, err)
			}
			return
		}
		cancelled.Add(1)
	}
	for _, u := range r.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := r.newUserClient(u)
			for {
				select {
				case <-runStop:
					return
				case <-tokens:
					book(u, api)
				}
			}
		}()
	}
	start := time.Now()
	t := time.NewTimer(cfg.Duration)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	close(runStop)
	wg.Wait()
	res.DurationS = time.Since(start).Seconds()
	res.Requested, res.Created, res.NoBattery = requested.Load(), created.Load(), noBattery.Load()
	res.Confirmed, res.Ready, res.Cancelled = confirmed.Load(), ready.Load(), cancelled.Load()
	res.ConfirmedPS = float64(res.Confirmed) / res.DurationS
	res.Confirm, res.ReadyLat, res.HTTP = confirmLat.Summary(), readyLat.Summary(), httpLat.Summary()
	if p1, ok := r.proc(); ok && haveProc {
		res.CPUSeconds = p1.CPUSeconds - p0.CPUSeconds
	}
	// Let the releases of the last cancellations be acknowledged before the
	// stations go.
	waitFor(ctx, 10*time.Second, func() bool { return r.inflight() == 0 })
	if res.Confirmed < res.Created || res.Ready < res.Created {
		rep.Failures = append(rep.Failures, fmt.Sprintf("of %d bookings created, %d were confirmed and %d ready", res.Created, res.Confirmed, res.Ready))
	}
	r.finish(rep)
	return ctx.Err()
}

// runSmoke runs a few seconds each of steady, rush and storm at low rates
// on one target: the CI check that everything is delivered without errors.
func runSmoke(ctx context.Context, cfg Config, tgt *target, rep *Report) error {
	parts := []Config{}
	st := cfg
	st.Scenario, st.MaxP99 = Steady, time.Hour // timing never fails the smoke
	parts = append(parts, st)
	if !tgt.isBaseline() {
		ru := cfg
		ru.Scenario, ru.Stations, ru.Slots, ru.Duration, ru.WS, ru.WSAll = Rush, 10, 4, 2*time.Second, 2, 1
		parts = append(parts, ru)
	}
	so := cfg
	so.Scenario, so.WS, so.WSAll = Storm, 2, 1
	parts = append(parts, so)
	for _, pc := range parts {
		sub, err := runOn(ctx, pc, tgt)
		if sub != nil {
			rep.Parts = append(rep.Parts, sub)
			for _, f := range sub.Failures {
				rep.Failures = append(rep.Failures, pc.Scenario+": "+f)
			}
			rep.Errors += sub.Errors
		}
		if err != nil {
			return fmt.Errorf("smoke %s: %w", pc.Scenario, err)
		}
	}
	return nil
}
