// Package swapdtest starts a whole swapd (server.New and Start) inside a
// test: a fresh data dir, random loopback ports for HTTP and MQTT, a known
// admin token, and a Shutdown at the test's cleanup.
//
// Tests inside the packages server imports (api, bridge, broker, store,
// the realtime layer, web) cannot use it without an import cycle; their
// external test packages (package api_test) can.
package swapdtest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/server"
)

// AdminToken is the admin token Start configures (at least
// api.MinAdminTokenLen characters).
const AdminToken = "swapdtest-admin-token-0123456789abcdef"

// ShutdownTimeout bounds the Shutdown at a test's cleanup.
const ShutdownTimeout = 10 * time.Second

// Swapd is a running in-process swapd.
type Swapd struct {
	Srv  *server.Server
	HTTP string // base URL: http://127.0.0.1:port
	MQTT string // host:port of the MQTT listener
	// Token is the admin token: AdminToken, or the one swapd generated
	// when mutate cleared Config.AdminToken (then in TokenFile).
	Token     string
	TokenFile string
	Admin     *client.Client // authenticated with Token
}

// Config is the config Start begins with: server.Defaults on 127.0.0.1:0
// for HTTP and MQTT, a fresh t.TempDir() as data dir, AdminToken.
func Config(t testing.TB) server.Config {
	t.Helper()
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	cfg.AdminToken = AdminToken
	return cfg
}

// Start starts swapd with Config(t) changed by mutate (nil: unchanged);
// its log is discarded. It fails t when swapd does not start.
func Start(t testing.TB, mutate func(*server.Config)) *Swapd {
	t.Helper()
	return StartLog(t, nil, mutate)
}

// StartLog is Start with swapd's log going to log (nil: discarded).
func StartLog(t testing.TB, log *slog.Logger, mutate func(*server.Config)) *Swapd {
	t.Helper()
	cfg := Config(t)
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		srv.Shutdown(ctx)
	})
	base := "http://" + srv.HTTPAddr()
	token, path := srv.AdminToken()
	return &Swapd{
		Srv: srv, HTTP: base, MQTT: srv.MQTTAddr(),
		Token: token, TokenFile: path, Admin: client.New(base, token),
	}
}
