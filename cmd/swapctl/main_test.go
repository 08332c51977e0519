package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/server"
)

func startServer(t *testing.T) (base, tokenFile string) {
	t.Helper()
	cfg := server.Defaults()
	cfg.DataDir = t.TempDir()
	cfg.MQTTAddr = "127.0.0.1:0"
	cfg.HTTPAddr = "127.0.0.1:0"
	srv, err := server.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	_, path := srv.AdminToken()
	return "http://" + srv.HTTPAddr(), path
}

func swapctl(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String() + errOut.String(), err
}

func TestStationAddListUserAdd(t *testing.T) {
	base, tokenFile := startServer(t)
	env := map[string]string{"SWAPCTL_SERVER": base}

	out, err := swapctl(t, env, "--token-file", tokenFile, "station", "add", "st-9", "--slots", "12", "--name", "Main St", "--lat", "52.5", "--lon", "13.4")
	if err != nil {
		t.Fatalf("station add: %v\n%s", err, out)
	}
	if !strings.Contains(out, "secret: ") {
		t.Errorf("station add must print the secret once:\n%s", out)
	}

	out, err = swapctl(t, env, "station", "list")
	if err != nil {
		t.Fatalf("station list: %v\n%s", err, out)
	}
	if !strings.Contains(out, "st-9") || !strings.Contains(out, "Main St") || !strings.Contains(out, "AVAIL") {
		t.Errorf("station list table:\n%s", out)
	}

	out, err = swapctl(t, env, "station", "list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0]["total_slots"] != float64(12) {
		t.Errorf("station list --json: %v\n%s", err, out)
	}

	tok, _ := os.ReadFile(tokenFile)
	env["SWAPCTL_TOKEN"] = strings.TrimSpace(string(tok))
	out, err = swapctl(t, env, "user", "add", "dana", "--json")
	if err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	var u map[string]string
	if json.Unmarshal([]byte(out), &u) != nil || u["id"] != "dana" || u["token"] == "" {
		t.Errorf("user add --json: %s", out)
	}
}

func TestErrorsAreClear(t *testing.T) {
	base, _ := startServer(t)
	env := map[string]string{"SWAPCTL_SERVER": base}
	missing := filepath.Join(t.TempDir(), "none")
	if out, err := swapctl(t, env, "--token-file", missing, "user", "add", "x"); err == nil || !strings.Contains(err.Error(), "no admin token") {
		t.Errorf("without a token: %v %s", err, out)
	}
	if _, err := swapctl(t, env, "--token", "wrong", "user", "add", "x"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("with a wrong token: %v", err)
	}
	if _, err := swapctl(t, env, "station", "add", "s1"); err == nil || !strings.Contains(err.Error(), "--slots") {
		t.Errorf("missing --slots: %v", err)
	}
	if _, err := swapctl(t, env, "frobnicate"); err == nil {
		t.Error("unknown command must fail")
	}
}
