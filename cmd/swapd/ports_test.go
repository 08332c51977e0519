package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestRunBothPortsTaken: with the MQTT and the HTTP port taken, swapd says
// so in one line naming both (main prints the error, nothing else is
// written to stderr), exits 1 and leaves a new data dir absent.
func TestRunBothPortsTaken(t *testing.T) {
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"--data-dir", dataDir, "--http-addr", addrs[0], "--mqtt-addr", addrs[1]},
		func(string) string { return "" }, &stdout, &stderr)
	if err == nil {
		t.Fatal("run must fail with both ports taken")
	}
	want := "http listener " + addrs[0] + ": address already in use; mqtt listener " + addrs[1] + ": address already in use"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if exitCode(err) != 1 {
		t.Errorf("exit code %d, want 1", exitCode(err))
	}
	if stderr.Len() != 0 || stdout.Len() != 0 {
		t.Errorf("want nothing but the error line; stderr:\n%s\nstdout:\n%s", stderr.String(), stdout.String())
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("data dir %s should not exist after a failed start: %v", dataDir, err)
	}
}
