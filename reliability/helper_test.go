package reliability

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
)

// helperEnv, when set, makes the test binary run as a helper process
// (see runHelper) instead of running tests.
const helperEnv = "RELIABILITY_HELPER"

// execLogEnv names the file the agent helper appends every executed
// hardware action to ("reserve 3", "unlock 3"), fsync'd before the action
// returns, so the count survives a SIGKILL.
const execLogEnv = "RELIABILITY_EXEC_LOG"

// runHelper runs the helper named by helperEnv and returns its exit code.
func runHelper() int {
	switch h := os.Getenv(helperEnv); h {
	case "agent":
		if err := agentHelper(); err != nil {
			fmt.Fprintln(os.Stderr, "agent helper:", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", h)
		return 2
	}
}

// agentHelper runs a station agent configured by the STATIONAGENT_…
// environment, with the sim driver wrapped to log executed actions.
func agentHelper() error {
	cfg, err := stationagent.ReadConfig("", os.LookupEnv)
	if err != nil {
		return err
	}
	cfg.ControlSocket = "off"
	cfg.PollInterval = 50 * time.Millisecond // 20 reports/s at most: well under the broker's per-station rate limit
	cfg.KeepAlive = time.Second
	cfg.ReconnectMin, cfg.ReconnectMax = 20*time.Millisecond, 200*time.Millisecond
	cfg.Sim = sim.Config{Slots: cfg.Sim.Slots, Occupied: cfg.Sim.Slots, Seed: 3, Speed: 60, ReturnEvery: -1}
	if err := cfg.Validate(); err != nil {
		return err
	}
	d, err := sim.New(cfg.Sim, nil)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(os.Getenv(execLogEnv), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	drv := &loggingDriver{Driver: d, f: f}
	// The log goes to the test's capture, shown only when a test fails.
	a, err := stationagent.New(cfg, stationagent.WithDriver(drv), stationagent.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// loggingDriver is the sim driver writing each reserve (indicator on) and
// unlock to a file before doing it.
type loggingDriver struct {
	*sim.Driver
	mu sync.Mutex
	f  *os.File
}

func (d *loggingDriver) record(action string, slot int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := fmt.Fprintf(d.f, "%s %d\n", action, slot); err != nil {
		return err
	}
	return d.f.Sync()
}

func (d *loggingDriver) SetIndicator(ctx context.Context, n int, on bool) error {
	if on {
		if err := d.record("reserve", n); err != nil {
			return err
		}
	}
	return d.Driver.SetIndicator(ctx, n, on)
}

func (d *loggingDriver) Unlock(ctx context.Context, n int) error {
	if err := d.record("unlock", n); err != nil {
		return err
	}
	return d.Driver.Unlock(ctx, n)
}
