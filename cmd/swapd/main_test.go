package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRunServesUntilCancelled(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var stderr bytes.Buffer
	env := map[string]string{"SWAPD_ADMIN_TOKEN": "swapd-main-test-admin-token-0123456789"}
	go func() {
		done <- run(ctx, []string{"serve", "--data-dir", t.TempDir(), "--mqtt-addr", "127.0.0.1:0", "--http-addr", httpAddr, "--log-level", "error"},
			func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("swapd exited early: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("swapd never became ready")
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("graceful shutdown returned %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("swapd did not stop after cancel")
	}
}

func TestRunRejectsBadInvocations(t *testing.T) {
	cases := map[string][]string{
		"unknown flag":   {"--nope"},
		"extra argument": {"serve", "extra"},
		"bad log level":  {"--log-level", "loud"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			err := run(context.Background(), args, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil {
				t.Fatal("want an error")
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error must be one line: %q", err)
			}
		})
	}
}

// TestRunRefusesShortAdminToken: swapd does not start with an admin token
// under 32 characters and says why in one line.
func TestRunRefusesShortAdminToken(t *testing.T) {
	env := map[string]string{"SWAPD_ADMIN_TOKEN": "t0ken"}
	err := run(context.Background(), []string{"--data-dir", t.TempDir(), "--mqtt-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"},
		func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
	want := "config: admin token too short: 5 characters, need at least 32 (SWAPD_ADMIN_TOKEN or admin_token)"
	if err == nil || err.Error() != want {
		t.Fatalf("run = %v, want %q", err, want)
	}
	if exitCode(err) != 1 {
		t.Errorf("exit code %d, want 1", exitCode(err))
	}
}
