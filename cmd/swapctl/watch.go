package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/wire"
)

// watchUsage is the synopsis of swapctl watch.
const watchUsage = "watch [--station ID | --notifications] [--since N] [--token USER_TOKEN]"

// watchCmd parses the flags of swapctl watch and runs it. The token is a
// user's token (--token or SWAPCTL_TOKEN), needed for --notifications and
// for station channels of a server with websocket.require_station_token;
// the admin token file is never sent.
func watchCmd(ctx context.Context, fs *flag.FlagSet, g *globals, rest []string, out io.Writer) error {
	station := fs.String("station", "", "watch one station's events (default: every station)")
	notifications := fs.Bool("notifications", false, "watch the notifications of the user whose --token is given")
	since := fs.String("since", "", "resume after this seq: replay the events after it, then live (default: a snapshot, then live)")
	pos, err := parse(fs, rest)
	if err != nil {
		return err
	}
	if len(pos) != 0 || (*station != "" && *notifications) {
		return fmt.Errorf("%w: %s", errUsage, watchUsage)
	}
	if *since != "" {
		if _, err := strconv.ParseUint(*since, 10, 64); err != nil {
			return fmt.Errorf("%w: --since must be a seq (0, 1, 2, …), not %q", errUsage, *since)
		}
	}
	if *notifications && g.token == "" {
		return fmt.Errorf("%w: --notifications needs the user's token: --token USER_TOKEN or SWAPCTL_TOKEN", errUsage)
	}
	path := "/ws/stations/"
	switch {
	case *notifications:
		path = "/ws/notifications/"
	case *station != "":
		if !wire.ValidID(*station) {
			return fmt.Errorf("%w: %q is not a station id", errUsage, *station)
		}
		path += *station + "/"
	}
	return watch(ctx, g.server, path, *since, g.token, out)
}

// watch connects to the WebSocket at path of the server at base and prints
// every frame on its own line, as the JSON the server sent (control
// characters escaped), until ctx is done (nil) or the connection ends (an
// error saying how to resume).
func watch(ctx context.Context, base, path, since, token string, out io.Writer) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: --server must be an http:// or https:// URL, not %q", errUsage, base)
	}
	u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	u.RawQuery = q.Encode()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	conn, resp, err := d.DialContext(ctx, u.String(), h)
	if err != nil {
		if resp != nil {
			defer resp.Body.Close()
			var body wire.ErrorBody
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
				return fmt.Errorf("%s: %d %s: %s", u.Redacted(), resp.StatusCode, body.Error.Code, body.Error.Message)
			}
			return fmt.Errorf("%s: %s", u.Redacted(), resp.Status)
		}
		return fmt.Errorf("%s: %w", u.Redacted(), err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() {
		_ = conn.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	})
	defer stop()
	// last is the seq to resume after: the newest event printed, else
	// --since, else the hello's seq (where live events start).
	var last uint64
	if since != "" {
		last, _ = strconv.ParseUint(since, 10, 64)
	}
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			resume := fmt.Sprintf("; resume with --since %d", last)
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return fmt.Errorf("closed by the server: %d %s%s", ce.Code, ce.Text, resume)
			}
			return fmt.Errorf("connection lost: %w%s", err, resume)
		}
		var f struct {
			Type string `json:"type"`
			Seq  uint64 `json:"seq"`
		}
		if json.Unmarshal(msg, &f) == nil && f.Seq > 0 && (f.Type != wire.TypeHello || since == "") {
			last = max(last, f.Seq)
		}
		if _, err := fmt.Fprintln(out, esc(string(msg))); err != nil {
			return err
		}
	}
}
