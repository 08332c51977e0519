// Command swapd is the swapbridge server: the embedded MQTT broker that
// stations connect to, the bridge that turns their telemetry into inventory,
// booking and collection events, the event store, and the HTTP and
// WebSocket API for apps and operators.
//
// Usage:
//
//	swapd [serve] [--config FILE] [--data-dir DIR] [--mqtt-addr HOST:PORT]
//	      [--http-addr HOST:PORT] [--log-level LEVEL] [--demo]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/swapbridge/swapbridge/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "swapd:", err)
		}
		os.Exit(exitCode(err))
	}
}

func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

var errUsage = errors.New("usage")

// run is swapd's main, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "serve" {
		args = args[1:]
	}
	if len(args) > 0 && args[0] == "version" {
		fmt.Fprintln(stdout, "swapd", server.Version)
		return nil
	}
	flags := server.NewFlags("swapd", stderr)
	if err := flags.Parse(args); err != nil {
		return err
	}
	if rest := flags.Args(); len(rest) > 0 {
		return fmt.Errorf("%w: unexpected argument %q (try swapd --help)", errUsage, rest[0])
	}
	cfg, err := server.Load(flags, getenv)
	if err != nil {
		return err
	}
	log, err := server.NewLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	if cfg.Demo.Enabled {
		return server.RunDemo(ctx, cfg, log, stdout)
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}
