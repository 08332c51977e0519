package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/stationagent"
)

// startBroker runs a mochi broker that accepts only st-1 / s3cret.
func startBroker(t *testing.T) string {
	t.Helper()
	return mqtttest.StartBroker(t, "", &auth.Ledger{
		Auth: auth.AuthRules{{Username: "st-1", Password: "s3cret", Allow: true}},
		ACL:  auth.ACLRules{{Filters: auth.Filters{"#": auth.ReadWrite}}},
	}, nil).URL()
}

func writeConfig(t *testing.T, server, secret, httpURL string) (path, dir string) {
	t.Helper()
	dir = t.TempDir()
	path = filepath.Join(dir, "stationagent.yaml")
	yaml := fmt.Sprintf(`server: %s
station_id: st-1
secret: %s
data_dir: %s
driver: sim
http_url: %s
poll_interval: 20ms
reconnect_min: 20ms
reconnect_max: 200ms
log_level: error
sim:
  slots: 6
  seed: 11
  return_every: -1s
`, server, secret, filepath.Join(dir, "data"), httpURL)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func TestBadConfigOneLineExit2(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("server: tcp://x:1\nstation_id: st-1\nsecret: s\ndriver: teleport\n"), 0o600)
	for name, args := range map[string][]string{
		"unknown driver": {"run", "--config", bad},
		"missing file":   {"run", "--config", filepath.Join(dir, "nope.yaml")},
		"bad yaml":       {"run", "--config", writeFile(t, dir, "x.yaml", "server: [\n")},
		"unknown field":  {"run", "--config", writeFile(t, dir, "y.yaml", "sevrer: tcp://x:1\n")},
		"bad level":      {"run", "--config", bad, "--log-level", "loud"},
		"bad command":    {"explode"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(t.Context(), args, &out, &errb)
			if err == nil {
				t.Fatal("accepted")
			}
			if code := exitCode(err); code != 2 {
				t.Errorf("exit code %d, want 2 (%v)", code, err)
			}
			if msg := oneLine(err.Error()); msg != err.Error() || strings.Contains(msg, "goroutine") {
				t.Errorf("error is not one clean line: %q", err.Error())
			}
		})
	}
}

func writeFile(t *testing.T, dir, name, body string) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("STATIONAGENT_SERVER", "tcp://env:1883")
	t.Setenv("STATIONAGENT_STATION_ID", "st-env")
	t.Setenv("STATIONAGENT_SECRET", "envsecret")
	t.Setenv("STATIONAGENT_DATA_DIR", "/var/lib/x")
	t.Setenv("STATIONAGENT_DRIVER", "sim")
	t.Setenv("STATIONAGENT_SIM_SLOTS", "9")
	path, _ := writeConfig(t, "tcp://file:1883", "filesecret", "")
	cfg, err := stationagent.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server != "tcp://env:1883" || cfg.StationID != "st-env" || cfg.Secret != "envsecret" ||
		cfg.DataDir != "/var/lib/x" || cfg.Sim.Slots != 9 || cfg.Driver != "sim" {
		t.Errorf("env not applied: %+v", cfg)
	}
	t.Setenv("STATIONAGENT_SIM_SLOTS", "many")
	if _, err := stationagent.LoadConfig(path); err == nil || !errors.Is(err, stationagent.ErrConfig) {
		t.Errorf("bad STATIONAGENT_SIM_SLOTS: %v", err)
	}
}

func TestExampleConfigs(t *testing.T) {
	for _, name := range []string{"stationagent.example.yaml", "stationagent.modbus.example.yaml"} {
		t.Run(name, func(t *testing.T) {
			if _, err := stationagent.LoadConfig(filepath.Join("..", "..", "configs", name)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunStatusSlotsUnlockDoctor(t *testing.T) {
	server := startBroker(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	path, _ := writeConfig(t, server, "s3cret", web.URL+"/healthz")

	// Doctor before the agent runs makes a real CONNECT.
	var out bytes.Buffer
	if err := run(t.Context(), []string{"doctor", "--config", path}, &out, &out); err != nil {
		t.Fatalf("doctor: %v\n%s", err, out.String())
	}
	for _, want := range []string{"ok    credentials  CONNECT accepted", "ok    clock", "ok    driver", "ok    data dir", "all checks passed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var runErr bytes.Buffer
	go func() { done <- run(ctx, []string{"run", "--config", path}, &bytes.Buffer{}, &runErr) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not stop")
		}
	}()

	// status: wait until the agent answers and is connected.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		out.Reset()
		err := run(t.Context(), []string{"status", "--config", path}, &out, &out)
		if err == nil && strings.Contains(out.String(), "(connected since") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a connected agent: %v\n%s\n%s", err, out.String(), runErr.String())
		}
		<-tick.C
	}
	for _, want := range []string{"boot_id       st-1-1-", "outbox", "driver        sim, 6 slots: ok", "reservations  none"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if err := run(t.Context(), []string{"unlock", "--config", path, "--slot", "2", "--reason", "stuck door"}, &out, &out); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	out.Reset()
	if err := run(t.Context(), []string{"slots", "--config", path, "--once"}, &out, &out); err != nil {
		t.Fatalf("slots: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 8 || !strings.HasPrefix(lines[0], "SLOT") {
		t.Fatalf("slots table:\n%s", out.String())
	}
	if !strings.Contains(lines[2], " open ") {
		t.Errorf("slot 2 not open after the unlock: %q", lines[2])
	}
	if err := run(t.Context(), []string{"unlock", "--config", path, "--slot", "99", "--reason", "x"}, &out, &out); err == nil {
		t.Error("unlock of slot 99 accepted")
	}
	if err := run(t.Context(), []string{"unlock", "--config", path, "--slot", "1"}, &out, &out); exitCode(err) != 2 {
		t.Errorf("unlock without a reason: %v", err)
	}

	// Doctor with the agent running asks the agent.
	out.Reset()
	if err := run(t.Context(), []string{"doctor", "--config", path}, &out, &out); err != nil {
		t.Fatalf("doctor with agent: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "the running agent is connected") {
		t.Errorf("doctor did not use the running agent:\n%s", out.String())
	}
}

func TestDoctorFails(t *testing.T) {
	server := startBroker(t)
	path, _ := writeConfig(t, server, "wrong", "http://127.0.0.1:1/healthz")
	var out bytes.Buffer
	err := run(t.Context(), []string{"doctor", "--config", path}, &out, &out)
	if err == nil || exitCode(err) == 0 {
		t.Fatalf("doctor passed with a wrong secret:\n%s", out.String())
	}
	for _, want := range []string{"FAIL  credentials", "hint:", "FAIL  clock"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestStatusWithoutAgent(t *testing.T) {
	path, _ := writeConfig(t, "tcp://127.0.0.1:1", "x", "")
	var out bytes.Buffer
	err := run(t.Context(), []string{"status", "--config", path}, &out, &out)
	if !errors.Is(err, stationagent.ErrAgentNotRunning) || exitCode(err) != 1 {
		t.Fatalf("status without agent: %v", err)
	}
}

// TestServerListStatusDoctor: with a list of servers (a YAML sequence),
// doctor checks each and names it; status shows the server the agent is
// on and the list; with the agent connected, doctor sends no CONNECT to
// the other servers; a dead server in the list is a failure of its own.
func TestServerListStatusDoctor(t *testing.T) {
	a, b := startBroker(t), startBroker(t)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer web.Close()
	path, _ := writeConfig(t, "["+a+", "+b+"]", "s3cret", web.URL+"/healthz")

	var out bytes.Buffer
	if err := run(t.Context(), []string{"doctor", "--config", path}, &out, &out); err != nil {
		t.Fatalf("doctor: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"servers " + a + ", " + b,
		"ok    tcp          " + a + ": connected to", "ok    credentials  " + a + ": CONNECT accepted",
		"ok    tcp          " + b + ": connected to", "ok    credentials  " + b + ": CONNECT accepted",
		"all checks passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out.String())
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", path}, &bytes.Buffer{}, &bytes.Buffer{}) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not stop")
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		out.Reset()
		err := run(t.Context(), []string{"status", "--config", path}, &out, &out)
		if err == nil && strings.Contains(out.String(), "(connected since") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed a connected agent: %v\n%s", err, out.String())
		}
		<-tick.C
	}
	for _, want := range []string{"broker        " + a + " (connected since", "servers       " + a + ", " + b + " (on 1 of 2)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if err := run(t.Context(), []string{"doctor", "--config", path}, &out, &out); err != nil {
		t.Fatalf("doctor with agent: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"connected to " + a,
		"ok    credentials  " + a + ": the running agent is connected as st-1",
		"skip  credentials  " + b + ": not tried: the running agent is connected to " + a,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor with the agent lacks %q:\n%s", want, out.String())
		}
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp://" + ln.Addr().String()
	ln.Close()
	path2, _ := writeConfig(t, dead+","+b, "s3cret", web.URL+"/healthz")
	out.Reset()
	if err := run(t.Context(), []string{"doctor", "--config", path2}, &out, &out); err == nil {
		t.Fatalf("doctor passed with a dead server:\n%s", out.String())
	}
	for _, want := range []string{
		"FAIL  tcp          " + dead + ": connect", "tries the other servers meanwhile",
		"skip  credentials  " + dead + ": broker unreachable",
		"ok    credentials  " + b + ": CONNECT accepted", "ok    clock", "1 check(s) failed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("doctor with a dead server lacks %q:\n%s", want, out.String())
		}
	}
}
