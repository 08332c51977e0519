package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/swapbridge/swapbridge/api"
)

// prepareDataDir creates the data dir (mode 0700), or checks an existing
// one. The dir holds the admin token and the store (station secret hashes,
// user token hashes, bookings), so it must be its owner's alone: an
// existing dir open to other users (any group or other permission bit, say
// 0755) is tightened to its owner's bits (0700) and one warning is logged.
// Tightening rather than refusing keeps a data dir made by an older swapd,
// by hand or by a container image (mkdir gives 0755) working after an
// upgrade. When it cannot be tightened (swapd is not its owner), swapd
// refuses to start, saying so.
func prepareDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", dir, err)
	}
	return tighten(dir, "data dir", log)
}

// tighten removes the group and other permission bits of path when it has
// any, logging one warning; an error says why it could not. On Windows,
// where these bits mean nothing, it does nothing.
func tighten(path, what string, log *slog.Logger) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	was := fi.Mode().Perm()
	if was&0o077 == 0 {
		return nil
	}
	now := was &^ 0o077
	if err := os.Chmod(path, now); err != nil {
		return fmt.Errorf("%s %s has mode %04o (open to other users) and cannot be tightened to %04o: %w",
			what, path, was, now, unwrapPath(err))
	}
	log.Warn(what+" was open to other users; tightened its mode", "path", path, "was", fmt.Sprintf("%04o", was), "now", fmt.Sprintf("%04o", now))
	return nil
}

// unwrapPath turns "chmod /x: operation not permitted" into "operation not
// permitted" (the path is already in the message).
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// adminToken returns the configured admin token, or the one in
// <data>/admin.token, generating that file (mode 0600) on first start. An
// existing file open to other users is tightened to 0600 (see tighten); a
// token in it shorter than api.MinAdminTokenLen is refused. A configured
// token's length is checked by Config.Validate.
func adminToken(cfg Config, log *slog.Logger) (token, path string, err error) {
	if cfg.AdminToken != "" {
		return cfg.AdminToken, "", nil
	}
	path = filepath.Join(cfg.DataDir, "admin.token")
	b, err := os.ReadFile(path)
	if err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			if err := tighten(path, "admin token file", log); err != nil {
				return "", "", err
			}
			if err := api.CheckAdminToken(t); err != nil {
				return "", "", fmt.Errorf("%w (in %s: delete it to have a new one generated, or set SWAPD_ADMIN_TOKEN)", err, path)
			}
			return t, path, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", "", fmt.Errorf("admin token %s: %w", path, err)
	}
	t := api.NewSecret()
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("admin token %s: %w", path, err)
	}
	// WriteFile keeps the mode of a file that was there (an empty one).
	if err := tighten(path, "admin token file", log); err != nil {
		return "", "", err
	}
	return t, path, nil
}
