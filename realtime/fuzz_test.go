package realtime

import (
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// FuzzClientReply: every client message gets exactly one JSON object back,
// a pong for a ping and an error with a code otherwise.
func FuzzClientReply(f *testing.F) {
	for _, s := range []string{`{"type":"ping"}`, ` {"type":"ping","x":[1]}`, `{"type":"pong"}`, `{}`, `null`, `[]`,
		`"ping"`, `{"type":`, `{"type":"ping"}{"type":"ping"}`, "\xff\xfe", `{"type":"\u0000"}`, ``} {
		f.Add(s, false, false)
	}
	f.Add(`{"type":"ping"}`, true, false)
	f.Add(`{"type":"ping"}`, false, true)
	now := time.Unix(1700000000, 0)
	f.Fuzz(func(t *testing.T, data string, binary, tooLarge bool) {
		mt := websocket.TextMessage
		if binary {
			mt = websocket.BinaryMessage
		}
		out := clientReply(mt, []byte(data), tooLarge, now)
		var m struct {
			Type    string    `json:"type"`
			TS      time.Time `json:"ts"`
			Code    string    `json:"code"`
			Message string    `json:"message"`
		}
		if err := json.Unmarshal(out, &m); err != nil {
			t.Fatalf("reply %q is not JSON: %v", out, err)
		}
		if !m.TS.Equal(now) {
			t.Fatalf("reply ts %v", m.TS)
		}
		isPing := !binary && !tooLarge && strings.Contains(data, "ping")
		switch m.Type {
		case wire.TypePong:
			if !isPing {
				t.Fatalf("pong for %q (binary %v, too large %v)", data, binary, tooLarge)
			}
		case wire.TypeError:
			if m.Code == "" || m.Message == "" || len(out) > 512 {
				t.Fatalf("bad error reply %s", out)
			}
		default:
			t.Fatalf("reply type %q", m.Type)
		}
	})
}

// FuzzPathAndSince: any request path and query parse without panicking;
// what is accepted is well-formed.
func FuzzPathAndSince(f *testing.F) {
	for _, s := range [][2]string{
		{"/ws/stations/", "since=12"}, {"/ws/stations/s1/", "since="}, {"/ws/stations/s1", "since=18446744073709551615"},
		{"/ws/notifications/", "token=x&since=3"}, {"/ws/stations//", "since=18446744073709551616"},
		{"/ws/stations/a/b/", "since=-1"}, {"/ws/stations/..", "since=1&since=2"}, {"/ws/x", "since=0x10"},
		{"/ws/stations/" + strings.Repeat("a", 65) + "/", "since=+1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, path, rawQuery string) {
		ch, err := parsePath(path)
		if err == nil {
			switch ch.Kind {
			case store.AllStations:
				if path != StationsPath && path != "/ws/stations" {
					t.Fatalf("%q parsed as all stations", path)
				}
			case store.OneStation:
				if !wire.ValidID(ch.ID) || !strings.HasPrefix(path, StationsPath+ch.ID) {
					t.Fatalf("%q parsed as station %q", path, ch.ID)
				}
			case store.OneUser:
				if (path != NotificationsPath && path != "/ws/notifications") || ch.ID != "" {
					t.Fatalf("%q parsed as user channel %q", path, ch.ID)
				}
			default:
				t.Fatalf("%q parsed as kind %d", path, ch.Kind)
			}
		} else if !errors.Is(err, errNotFound) && !errors.Is(err, wire.ErrInvalidID) {
			t.Fatalf("unexpected error %v", err)
		}
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return
		}
		since, ok, err := parseSince(q)
		if err != nil {
			if ok || since != 0 {
				t.Fatalf("error with ok=%v since=%d", ok, since)
			}
			return
		}
		if ok {
			if got := q.Get("since"); got == "" || strings.TrimLeft(got, "0123456789") != "" {
				t.Fatalf("accepted since %q", got)
			}
		} else if since != 0 {
			t.Fatalf("since %d without ok", since)
		}
	})
}
