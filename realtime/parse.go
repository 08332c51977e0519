package realtime

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Path prefixes served by the hub.
const (
	StationsPath      = "/ws/stations/"
	NotificationsPath = "/ws/notifications/"
)

// errNotFound is returned by parsePath for a path the hub does not serve.
var errNotFound = errors.New("no such WebSocket endpoint")

// parsePath maps a request path to the channel it asks for. For
// /ws/notifications/ it returns Kind OneUser with an empty ID (the user comes
// from the token). A station path with a malformed id wraps
// wire.ErrInvalidID; any other unknown path returns errNotFound. Trailing
// slashes are optional (WebSocket clients do not follow redirects).
func parsePath(path string) (store.Channel, error) {
	switch path {
	case NotificationsPath, strings.TrimSuffix(NotificationsPath, "/"):
		return store.Channel{Kind: store.OneUser}, nil
	case strings.TrimSuffix(StationsPath, "/"):
		return store.Channel{Kind: store.AllStations}, nil
	}
	rest, ok := strings.CutPrefix(path, StationsPath)
	if !ok {
		return store.Channel{}, errNotFound
	}
	if rest == "" {
		return store.Channel{Kind: store.AllStations}, nil
	}
	sid := strings.TrimSuffix(rest, "/")
	if strings.Contains(sid, "/") {
		return store.Channel{}, errNotFound
	}
	if err := wire.CheckID("station id", sid); err != nil {
		return store.Channel{}, err
	}
	return store.Channel{Kind: store.OneStation, ID: sid}, nil
}

// channelName is the hello's channel: "stations", "station:{sid}" or
// "user:{uid}".
func channelName(ch store.Channel) string {
	switch ch.Kind {
	case store.OneStation:
		return "station:" + ch.ID
	case store.OneUser:
		return "user:" + ch.ID
	}
	return "stations"
}

// errBadSince is wrapped by parseSince.
var errBadSince = errors.New("since must be a decimal event seq (0 to 18446744073709551615)")

// parseSince reads ?since=. ok is false when the parameter is absent (or
// empty). A value that is not a plain unsigned decimal is an error (the
// handler answers 400 before the upgrade); a well-formed value that is out of
// retention or ahead of the log is not an error here (recovered:false).
func parseSince(q url.Values) (since uint64, ok bool, err error) {
	vs, present := q["since"]
	if !present || (len(vs) == 1 && vs[0] == "") {
		return 0, false, nil
	}
	if len(vs) != 1 {
		return 0, false, errBadSince
	}
	v := vs[0]
	if len(v) > 20 || strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' }) >= 0 {
		return 0, false, errBadSince
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, errBadSince
	}
	return n, true, nil
}

// tokenFrom returns the bearer token of the Authorization header, else the
// token query parameter, else "".
func tokenFrom(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("token")
}

// originPolicy decides which browser origins may connect.
type originPolicy struct {
	exact    []string // lower-case "scheme://host[:port]"
	wildcard []struct{ scheme, suffix string }
}

func newOriginPolicy(allowed []string) (originPolicy, error) {
	var p originPolicy
	for _, a := range allowed {
		a = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(a), "/"))
		scheme, host, ok := strings.Cut(a, "://")
		if !ok || scheme == "" || host == "" || strings.ContainsAny(host, "/?#") {
			return p, errors.New("realtime: allowed origin " + strconv.Quote(a) + " must look like https://app.example.com or https://*.example.com")
		}
		if suffix, ok := strings.CutPrefix(host, "*."); ok {
			if suffix == "" || strings.Contains(suffix, "*") {
				return p, errors.New("realtime: bad wildcard origin " + strconv.Quote(a))
			}
			p.wildcard = append(p.wildcard, struct{ scheme, suffix string }{scheme, "." + suffix})
			continue
		}
		if strings.Contains(host, "*") {
			return p, errors.New("realtime: bad wildcard origin " + strconv.Quote(a))
		}
		p.exact = append(p.exact, a)
	}
	return p, nil
}

// allowed reports whether r's Origin may open a socket.
func (p *originPolicy) allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: nothing to protect with CORS rules
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	if len(p.exact) == 0 && len(p.wildcard) == 0 {
		switch strings.ToLower(u.Hostname()) {
		case "localhost", "127.0.0.1", "::1":
			return true
		}
		return false
	}
	o := strings.ToLower(u.Scheme + "://" + u.Host)
	for _, e := range p.exact {
		if o == e {
			return true
		}
	}
	host := strings.ToLower(u.Host)
	for _, w := range p.wildcard {
		if strings.ToLower(u.Scheme) == w.scheme && strings.HasSuffix(host, w.suffix) && len(host) > len(w.suffix) {
			return true
		}
	}
	return false
}

// Error codes of "error" replies to client messages.
const (
	CodeBadJSON         = "bad_json"
	CodeUnknownType     = "unknown_type"
	CodeBinaryFrame     = "binary_not_supported"
	CodeMessageTooLarge = "message_too_large"
	maxEchoedTypeLength = 32
)

// clientReply answers one client message: a pong for {"type":"ping"}, an
// error message for anything else. msgType is websocket.TextMessage or
// BinaryMessage; tooLarge says data was cut at the read limit. It never
// panics and always returns one JSON object.
func clientReply(msgType int, data []byte, tooLarge bool, now time.Time) []byte {
	now = now.UTC()
	switch {
	case tooLarge:
		return errorFrame(now, CodeMessageTooLarge, "message exceeds the read limit")
	case msgType != websocket.TextMessage:
		return errorFrame(now, CodeBinaryFrame, "send JSON text frames")
	}
	var m struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(data, &m); err != nil || !startsWithObject(data) {
		return errorFrame(now, CodeBadJSON, "message must be a JSON object")
	}
	switch m.Type {
	case wire.TypePing:
		b, _ := json.Marshal(wire.Pong{Type: wire.TypePong, TS: now})
		return b
	case "":
		return errorFrame(now, CodeUnknownType, `message has no "type"`)
	}
	t := m.Type
	if len(t) > maxEchoedTypeLength {
		t = t[:maxEchoedTypeLength] + "…"
	}
	return errorFrame(now, CodeUnknownType, "unknown message type "+strconv.Quote(t)+`; only "ping" is accepted`)
}

// startsWithObject reports whether the first non-space byte of data is '{'.
func startsWithObject(data []byte) bool {
	for _, c := range data {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c == '{'
	}
	return false
}

func errorFrame(now time.Time, code, msg string) []byte {
	b, _ := json.Marshal(wire.ErrorMsg{Type: wire.TypeError, TS: now, Code: code, Message: msg})
	return b
}
