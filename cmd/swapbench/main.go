// Command swapbench is swapbridge's load generator: simulated stations over
// real MQTT, app clients over WebSocket and bookings over HTTP, against a
// running swapd (--server, --mqtt, --admin-token, --server-pid), a swapd
// started in-process (the default without --server), or a bare embedded
// MQTT broker (--baseline); --compare runs both and prints ours/baseline.
//
// Usage:
//
//	swapbench [steady|storm|rush|ramp|fanout|smoke] [flags]
//
// It exits 1 when the run had errors or delivered fewer frames than
// expected (never because of timing), 2 on bad usage. docs/BENCHMARKS.md
// describes the method and the published figures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/swapbridge/swapbridge/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "swapbench:", err)
		}
		switch {
		case errors.Is(err, flag.ErrHelp), errors.Is(err, errUsage):
			os.Exit(2)
		default:
			os.Exit(1)
		}
	}
}

var (
	errUsage  = errors.New("usage")
	errFailed = errors.New("run failed")
)

// run is swapbench's main, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	scenario := bench.Steady
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		scenario, args = args[0], args[1:]
	}
	switch scenario {
	case bench.Steady, bench.Storm, bench.Rush, bench.Ramp, bench.Fanout, bench.Smoke:
	default:
		return fmt.Errorf("%w: unknown scenario %q: use steady, storm, rush, ramp, fanout or smoke", errUsage, scenario)
	}
	cfg := bench.Defaults(scenario)
	fs := flag.NewFlagSet("swapbench "+scenario, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Server, "server", "", "HTTP `url` of a running swapd (default: start one in-process)")
	fs.StringVar(&cfg.MQTT, "mqtt", "", "MQTT `host:port` of that swapd")
	fs.StringVar(&cfg.AdminToken, "admin-token", getenv("SWAPD_ADMIN_TOKEN"), "admin `token` (env SWAPD_ADMIN_TOKEN)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "`pid` of that swapd, for its CPU time and memory from /proc")
	fs.BoolVar(&cfg.Embedded, "embedded", false, "start swapd in this process (the default without --server)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data `dir` of the embedded swapd (default: a temporary dir)")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "run against a bare embedded MQTT broker instead")
	fs.BoolVar(&cfg.Compare, "compare", false, "run the baseline, then swapd, and print ours/baseline")
	fs.IntVar(&cfg.Stations, "stations", cfg.Stations, "simulated stations")
	fs.IntVar(&cfg.Slots, "slots", cfg.Slots, "slots per station")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "telemetry messages per `second`, all stations together (ramp: the first step)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long steady and rush send")
	fs.IntVar(&cfg.WS, "ws", cfg.WS, "station WebSocket clients")
	fs.IntVar(&cfg.WSAll, "ws-all", cfg.WSAll, "how many of them listen to every station (/ws/stations/)")
	fs.IntVar(&cfg.Window, "window", cfg.Window, "unacknowledged publishes per station")
	fs.IntVar(&cfg.Connect, "connect", cfg.Connect, "stations connecting at once during setup")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "rush: users, each with a notification socket")
	fs.Float64Var(&cfg.BookingRate, "booking-rate", cfg.BookingRate, "rush: bookings per second")
	fs.DurationVar(&cfg.StormWindow, "storm-window", cfg.StormWindow, "storm: every station reconnects within this window")
	fs.Float64Var(&cfg.HTTPRate, "http-rate", cfg.HTTPRate, "storm: GET /api/stations/{sid} per second")
	fs.Float64Var(&cfg.RampStep, "ramp-step", cfg.RampStep, "ramp: rate added per step")
	fs.DurationVar(&cfg.StepDuration, "step-duration", cfg.StepDuration, "ramp: how long each step sends")
	fs.Float64Var(&cfg.MaxRate, "max-rate", cfg.MaxRate, "ramp: highest rate tried")
	fs.DurationVar(&cfg.MaxP99, "max-p99", cfg.MaxP99, "ramp: a step with a higher publish→frame p99 is not good")
	jsonOut := fs.Bool("json", false, "write the report as JSON instead of a table")
	progress := fs.String("progress", "auto", "progress line on stderr: auto (on a terminal), on or off")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this process (with the embedded swapd: server and bench) to `file`")
	fs.StringVar(&cfg.HeapProfile, "memprofile", "", "write a heap profile of this process to `file` once every station and socket is connected")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q (the scenario comes first)", errUsage, fs.Arg(0))
	}
	if cfg.Server == "" && !cfg.Baseline {
		cfg.Embedded = true
	}
	switch *progress {
	case "on":
		cfg.Progress = stderr
	case "auto":
		if f, ok := stderr.(*os.File); ok && isTerminal(f) {
			cfg.Progress = stderr
		}
	case "off":
	default:
		return fmt.Errorf("%w: --progress must be auto, on or off", errUsage)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var (
		ours, base *bench.Report
		err        error
	)
	if cfg.Compare {
		ours, base, err = bench.RunCompare(ctx, cfg)
	} else {
		ours, err = bench.Run(ctx, cfg)
	}
	if ours != nil {
		if *jsonOut {
			var v any = ours
			if base != nil {
				v = map[string]*bench.Report{"swapd": ours, "baseline": base}
			}
			if werr := bench.WriteJSON(stdout, v); werr != nil && err == nil {
				err = werr
			}
		} else {
			if base != nil {
				base.Print(stdout)
				fmt.Fprintln(stdout)
			}
			ours.Print(stdout)
			if base != nil {
				fmt.Fprintln(stdout)
				bench.PrintCompare(stdout, ours, base)
			}
		}
	}
	if err != nil {
		return err
	}
	if !ours.OK() || (base != nil && !base.OK()) {
		return errFailed
	}
	return nil
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
