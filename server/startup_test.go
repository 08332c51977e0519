package server

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func takePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestTakenPortsNamedBeforeAnythingHappens: with both ports taken, New
// fails with one line naming both, logs nothing and leaves a new data dir
// absent.
func TestTakenPortsNamedBeforeAnythingHappens(t *testing.T) {
	cfg := testConfig(t)
	cfg.AdminToken = ""
	cfg.DataDir = filepath.Join(t.TempDir(), "new", "data")
	cfg.HTTPAddr, cfg.MQTTAddr = takePort(t), takePort(t)
	var logs bytes.Buffer
	_, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err == nil {
		t.Fatal("New must fail when both ports are taken")
	}
	msg := err.Error()
	for _, want := range []string{"http listener " + cfg.HTTPAddr + ": address already in use", "mqtt listener " + cfg.MQTTAddr + ": address already in use"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q: want %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Errorf("error %q: want one line", msg)
	}
	if logs.Len() != 0 {
		t.Errorf("want nothing logged before the error, got:\n%s", logs.String())
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(cfg.DataDir))); !os.IsNotExist(err) {
		t.Errorf("data dir's parent should not have been created: %v", err)
	}
}

// TestSameAddressTwiceIsTaken: HTTP and MQTT on one address cannot both
// listen; New says so instead of failing half-started.
func TestSameAddressTwiceIsTaken(t *testing.T) {
	cfg := testConfig(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.HTTPAddr, cfg.MQTTAddr = addr, addr
	_, err = New(cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "mqtt listener "+addr) {
		t.Fatalf("New = %v, want the MQTT address named as taken", err)
	}
}

// TestFailedStartLeavesFreshDataDirEmpty: a port taken between New and
// Start fails Start; what New created in a data dir that was empty is
// removed again, while a data dir that held something is left alone.
func TestFailedStartLeavesFreshDataDirEmpty(t *testing.T) {
	for _, existing := range []bool{false, true} {
		name := map[bool]string{false: "empty", true: "in use"}[existing]
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.AdminToken = ""
			keep := filepath.Join(cfg.DataDir, "keep.txt")
			if existing {
				if err := os.WriteFile(keep, []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg.HTTPAddr = ln.Addr().String()
			ln.Close()
			srv, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "admin.token")); err != nil {
				t.Fatalf("New should have written the admin token: %v", err)
			}
			ln, err = net.Listen("tcp", cfg.HTTPAddr)
			if err != nil {
				t.Skipf("port reused meanwhile: %v", err)
			}
			defer ln.Close()
			if err := srv.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "address already in use") {
				t.Fatalf("Start = %v, want the HTTP port taken", err)
			}
			entries, err := os.ReadDir(cfg.DataDir)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			want := map[bool]int{false: 0, true: 3}[existing] // keep.txt, admin.token, swapd.db
			if len(names) != want {
				t.Errorf("data dir holds %v, want %d entries", names, want)
			}
		})
	}
}
