package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
)

// watcher is a swapctl watch running in the background; its stdout lines
// arrive on lines, its result on done.
type watcher struct {
	lines  chan string
	done   chan error
	cancel context.CancelFunc
	stderr *bytes.Buffer
}

func startWatch(t *testing.T, env map[string]string, args ...string) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	w := &watcher{lines: make(chan string, 100), done: make(chan error, 1), cancel: cancel, stderr: &bytes.Buffer{}}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			w.lines <- sc.Text()
		}
		close(w.lines)
	}()
	go func() {
		err := run(ctx, append([]string{"watch"}, args...), func(k string) string { return env[k] }, pw, w.stderr)
		pw.Close()
		w.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
	})
	return w
}

// next returns the next frame of type typ, failing on a frame the test did
// not expect to skip (skip lists the types that may come first).
func (w *watcher) next(t *testing.T, typ string, skip ...string) map[string]any {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-w.lines:
			if !ok {
				t.Fatalf("watch ended before a %s frame: %v", typ, <-w.done)
			}
			var f map[string]any
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				t.Fatalf("watch printed %q, not one JSON frame: %v", line, err)
			}
			if f["type"] == typ {
				return f
			}
			if !contains(skip, f["type"]) {
				t.Fatalf("got %s while waiting for %s: %s", f["type"], typ, line)
			}
		case <-timeout:
			t.Fatalf("no %s frame within 10s", typ)
		}
	}
}

func contains(list []string, v any) bool {
	for _, s := range list {
		if s == v {
			return true
		}
	}
	return false
}

// stop cancels the watch (Ctrl-C) and returns its result.
func (w *watcher) stop(t *testing.T) error {
	t.Helper()
	w.cancel()
	select {
	case err := <-w.done:
		w.done <- err // for Cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not stop after cancel")
		return nil
	}
}

func TestWatch(t *testing.T) {
	sd := swapdtest.Start(t, func(c *server.Config) { c.AdminToken = "" })
	srv, tokenFile := sd.Srv, sd.TokenFile
	env := map[string]string{"SWAPCTL_SERVER": sd.HTTP}
	admin := func(args ...string) string {
		t.Helper()
		out, err := swapctl(t, env, append([]string{"--token-file", tokenFile}, args...)...)
		if err != nil {
			t.Fatalf("swapctl %v: %v\n%s", args, err, out)
		}
		return out
	}
	admin("station", "add", "st-9", "--slots", "4")
	userToken := ""
	for _, l := range strings.Split(admin("user", "add", "alice"), "\n") {
		if tok, ok := strings.CutPrefix(l, "token: "); ok {
			userToken = tok
		}
	}
	if userToken == "" {
		t.Fatal("user add printed no token")
	}

	var statusSeq float64
	t.Run("one station, live", func(t *testing.T) {
		w := startWatch(t, env, "--station", "st-9")
		hello := w.next(t, "hello")
		if ch, _ := hello["channel"].(string); !strings.Contains(ch, "st-9") {
			t.Errorf("hello for channel %v, want st-9's", hello["channel"])
		}
		admin("station", "status", "st-9", "maintenance")
		f := w.next(t, "station_status", "inventory_update")
		if f["station_id"] != "st-9" || f["status"] != "maintenance" {
			t.Errorf("station_status frame %v", f)
		}
		statusSeq = f["seq"].(float64)
		if err := w.stop(t); err != nil {
			t.Errorf("watch after Ctrl-C: %v, want nil", err)
		}
	})

	t.Run("resume with since", func(t *testing.T) {
		w := startWatch(t, env, "--station", "st-9", "--since", strconv.Itoa(int(statusSeq)-1))
		w.next(t, "hello")
		f := w.next(t, "station_status", "inventory_update")
		if f["seq"] != statusSeq || f["status"] != "maintenance" {
			t.Errorf("replayed %v, want the station_status of seq %v", f, statusSeq)
		}
	})

	t.Run("notifications with the user token", func(t *testing.T) {
		w := startWatch(t, env, "--notifications", "--token", userToken)
		w.next(t, "hello")
		admin("notify", "alice", "--title", "Hi", "--message", "watch works")
		f := w.next(t, "notification")
		if f["title"] != "Hi" || f["message"] != "watch works" {
			t.Errorf("notification frame %v", f)
		}
	})

	t.Run("server going away says how to resume", func(t *testing.T) {
		w := startWatch(t, env, "--station", "st-9", "--since", "0")
		w.next(t, "hello")
		w.next(t, "station_status", "inventory_update")
		srv.DisconnectWebSockets("restart")
		select {
		case err := <-w.done:
			w.done <- err
			if err == nil || !strings.Contains(err.Error(), "closed by the server: 1012 restart") ||
				!strings.Contains(err.Error(), "resume with --since ") {
				t.Errorf("watch = %v, want the close and how to resume", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end when the server closed the connection")
		}
	})

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"bad user token":          {[]string{"--notifications", "--token", "not-a-token"}, "401 unauthorized"},
		"notifications, no token": {[]string{"--notifications"}, "needs the user's token"},
		"unknown station":         {[]string{"--station", "st-404"}, "404 station_not_found"},
		"bad since":               {[]string{"--since", "soon"}, "--since must be a seq"},
	} {
		t.Run(name, func(t *testing.T) {
			out, err := swapctl(t, env, append([]string{"watch"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("watch %v = %v (%s), want one line with %q", tc.args, err, out, tc.want)
			}
		})
	}
}
