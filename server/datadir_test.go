package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestOpenDataDirAndTokenFileAreTightened: an existing data dir open to
// other users (0755) and an admin.token readable by them (0644) are
// tightened to 0700 and 0600, with one warning each, and the token in the
// file is still the admin token.
func TestOpenDataDirAndTokenFileAreTightened(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		t.Fatal(err)
	}
	const tok = "file-admin-token-0123456789abcdefghij"
	tokPath := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokPath, []byte(tok+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tokPath, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.DataDir, cfg.AdminToken = dir, ""
	var logs bytes.Buffer
	srv, err := New(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(context.Background())
	if got, _ := srv.AdminToken(); got != tok {
		t.Errorf("admin token %q, want the file's %q", got, tok)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, tokPath: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %04o, want %04o", path, got, want)
		}
	}
	out := logs.String()
	if n := strings.Count(out, "level=WARN"); n != 2 {
		t.Errorf("%d warnings, want one for the dir and one for the file:\n%s", n, out)
	}
	for _, want := range []string{`msg="data dir was open to other users; tightened its mode"`, "was=0755 now=0700",
		`msg="admin token file was open to other users; tightened its mode"`, "was=0644 now=0600"} {
		if !strings.Contains(out, want) {
			t.Errorf("the log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, tok) {
		t.Errorf("the admin token was logged:\n%s", out)
	}

	// A second start finds nothing to tighten and says nothing.
	srv.Shutdown(context.Background())
	logs.Reset()
	srv2, err := New(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	srv2.Shutdown(context.Background())
	if logs.Len() != 0 {
		t.Errorf("second start logged warnings:\n%s", logs.String())
	}
}

// TestShortAdminTokenRefused: swapd does not start with an admin token
// under 32 characters, wherever it comes from, and says so in one line.
func TestShortAdminTokenRefused(t *testing.T) {
	t.Run("config", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AdminToken = "short"
		_, err := New(cfg, nil)
		want := "config: admin token too short: 5 characters, need at least 32 (SWAPD_ADMIN_TOKEN or admin_token)"
		if err == nil || err.Error() != want {
			t.Errorf("New = %v, want %q", err, want)
		}
	})
	t.Run("environment", func(t *testing.T) {
		env := map[string]string{"SWAPD_ADMIN_TOKEN": strings.Repeat("x", 31), "SWAPD_DATA_DIR": t.TempDir()}
		_, err := Load(NewFlags("swapd", &bytes.Buffer{}), func(k string) string { return env[k] })
		if err == nil || !strings.Contains(err.Error(), "admin token too short: 31 characters, need at least 32") {
			t.Errorf("Load = %v, want the too-short error", err)
		}
	})
	t.Run("32 characters", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AdminToken = strings.Repeat("x", 32)
		srv, err := New(cfg, nil)
		if err != nil {
			t.Fatalf("a 32-character token must do: %v", err)
		}
		srv.Shutdown(context.Background())
	})
	t.Run("file", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.AdminToken = ""
		path := filepath.Join(cfg.DataDir, "admin.token")
		if err := os.WriteFile(path, []byte("adm\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := New(cfg, nil)
		if err == nil || !strings.Contains(err.Error(), "admin token too short: 3 characters, need at least 32") ||
			!strings.Contains(err.Error(), path) || strings.Contains(err.Error(), "\n") {
			t.Errorf("New = %v, want one line naming the file and the length", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "adm\n" {
			t.Errorf("the short token file was changed: %q", b)
		}
	})
}
