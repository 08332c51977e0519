// Command stationagent runs on a station controller: the daemon (run) and
// the technicians' tools (status, slots, unlock, doctor).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/swapbridge/swapbridge/stationagent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "stationagent: "+oneLine(err.Error()))
		}
		os.Exit(exitCode(err))
	}
}

// errSilent marks a failure already reported on stdout (doctor).
var errSilent = errors.New("failed")

// usageError is a bad command line or config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, stationagent.ErrConfig) {
		return 2
	}
	return 1
}

const usage = `usage: stationagent <command> [flags]

commands:
  run      run the agent (the daemon)
  status   show the running agent's state
  slots    show the slots, refreshing; --once prints them once
  unlock   --slot N --reason TEXT: open a slot as a technician
  doctor   check config, every server (network, TLS, credentials), clock, data dir and driver

common flags: --config FILE (default stationagent.yaml), --log-level LEVEL
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return usageError{errors.New("a command is required")}
		}
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("stationagent "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "YAML config file (default stationagent.yaml when present)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides the config)")
	var once bool
	var slot int
	var reason string
	interval := time.Second
	switch cmd {
	case "slots":
		fs.BoolVar(&once, "once", false, "print the table once, without refreshing")
		fs.DurationVar(&interval, "interval", time.Second, "refresh interval")
	case "unlock":
		fs.IntVar(&slot, "slot", 0, "slot number")
		fs.StringVar(&reason, "reason", "", "why (recorded in the journal)")
	case "run", "status", "doctor":
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	path := *configPath
	if path == "" {
		if _, err := os.Stat("stationagent.yaml"); err == nil {
			path = "stationagent.yaml"
		}
	}
	cfg, err := stationagent.ReadConfig(path, os.LookupEnv)
	if err != nil {
		return err
	}
	if *logLevel != "" {
		cfg.LogLevel = *logLevel
	}
	level, err := stationagent.ParseLevel(cfg.LogLevel)
	if err != nil {
		return usageError{err}
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch cmd {
	case "run":
		if err := cfg.Validate(); err != nil {
			return err
		}
		a, err := stationagent.New(cfg, stationagent.WithLogger(logger))
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case "status":
		return status(ctx, cfg, stdout)
	case "slots":
		return slots(ctx, cfg, stdout, once, interval)
	case "unlock":
		if slot < 1 {
			return usageError{errors.New("--slot N is required")}
		}
		if strings.TrimSpace(reason) == "" {
			return usageError{errors.New("--reason TEXT is required")}
		}
		c := stationagent.NewControlClient(cfg.ControlSocket)
		if err := c.Unlock(ctx, slot, reason); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "slot %d unlocked (reason: %s)\n", slot, reason)
		return nil
	case "doctor":
		checks := stationagent.Doctor(ctx, cfg)
		if n := stationagent.PrintChecks(stdout, checks); n > 0 {
			fmt.Fprintf(stdout, "%d check(s) failed\n", n)
			return errSilent
		}
		fmt.Fprintln(stdout, "all checks passed")
		return nil
	}
	return nil
}

func status(ctx context.Context, cfg stationagent.Config, w io.Writer) error {
	st, err := stationagent.NewControlClient(cfg.ControlSocket).Status(ctx)
	if err != nil {
		return err
	}
	conn := "disconnected"
	if st.Connected {
		conn = "connected since " + st.ConnectedSince.UTC().Format(time.RFC3339)
	}
	drv := "ok"
	if !st.DriverOK {
		drv = "FAIL " + st.DriverError
	}
	fmt.Fprintf(w, "station       %s\n", st.StationID)
	fmt.Fprintf(w, "agent         %s, up since %s\n", st.AgentVersion, st.Started.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "boot_id       %s\n", st.BootID)
	fmt.Fprintf(w, "broker        %s (%s, %d connects)\n", st.Broker, conn, st.Connects)
	if len(st.Servers) > 1 {
		on := slices.Index(st.Servers, st.Broker) + 1
		fmt.Fprintf(w, "servers       %s (on %d of %d)\n", strings.Join(st.Servers, ", "), on, len(st.Servers))
	}
	if st.LastError != "" {
		fmt.Fprintf(w, "last error    %s\n", st.LastError)
	}
	fmt.Fprintf(w, "telemetry     seq queued %d, sent %d, acknowledged %d\n", st.LastSeqQueued, st.LastSeqSent, st.LastSeqAcked)
	fmt.Fprintf(w, "outbox        %d message(s)\n", st.OutboxDepth)
	fmt.Fprintf(w, "driver        %s, %d slots: %s\n", st.Driver, st.Slots, drv)
	if len(st.Reservations) == 0 {
		fmt.Fprintf(w, "reservations  none\n")
	}
	for i, r := range st.Reservations {
		label := "reservations"
		if i > 0 {
			label = ""
		}
		exp := "no expiry"
		if !r.ExpiresAt.IsZero() {
			exp = "until " + r.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%-12s  slot %d for booking %s, %s\n", label, r.Slot, r.BookingID, exp)
	}
	return nil
}

func slots(ctx context.Context, cfg stationagent.Config, w io.Writer, once bool, interval time.Duration) error {
	c := stationagent.NewControlClient(cfg.ControlSocket)
	if interval < 100*time.Millisecond {
		interval = 100 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		v, err := c.Slots(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if !once {
			fmt.Fprint(w, "\x1b[H\x1b[2J") // home, clear screen
		}
		printSlots(w, v)
		if once {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func printSlots(w io.Writer, v stationagent.SlotsView) {
	reserved := map[int]string{}
	for _, r := range v.Reservations {
		reserved[r.Slot] = r.BookingID
	}
	sort.Slice(v.Slots, func(i, j int) bool { return v.Slots[i].Slot < v.Slots[j].Slot })
	fmt.Fprintf(w, "%-4s  %-10s  %-17s  %5s  %6s  %-6s  %-6s  %-8s  %s\n", "SLOT", "BATTERY", "SOC", "SOH", "TEMP", "DOOR", "LOCK", "FAULT", "RESERVED")
	for _, s := range v.Slots {
		bat, soc, soh, temp := "-", "", "", ""
		if s.Occupied() {
			bat = s.Battery()
			soc = socBar(s.SoC, s.Charging)
			soh = fmt.Sprintf("%.0f%%", s.SoH)
			temp = fmt.Sprintf("%.1f°C", s.TempC)
		}
		lock := "locked"
		if !s.Locked {
			lock = "open"
		}
		fault := s.Fault
		if fault == "" {
			fault = "-"
		}
		res := reserved[s.Slot]
		if res == "" {
			res = "-"
		}
		fmt.Fprintf(w, "%-4d  %-10s  %-17s  %5s  %6s  %-6s  %-6s  %-8s  %s\n", s.Slot, bat, soc, soh, temp, s.Door, lock, fault, res)
	}
	if !v.TS.IsZero() {
		fmt.Fprintf(w, "read at %s\n", v.TS.UTC().Format(time.RFC3339))
	}
}

// socBar draws "[#####-----] 52%" with a + when charging.
func socBar(soc float64, charging bool) string {
	n := int(soc/10 + 0.5)
	n = max(0, min(10, n))
	mark := " "
	if charging {
		mark = "+"
	}
	return fmt.Sprintf("[%s%s]%s%3.0f%%", strings.Repeat("#", n), strings.Repeat(".", 10-n), mark, soc)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
