package api

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// MinAdminTokenLen is the shortest admin token New accepts, in characters.
// A generated token (NewSecret) has 43.
const MinAdminTokenLen = 32

// CheckAdminToken says why token cannot be the admin token, or returns nil.
// The error is one line meant for an operator:
// "admin token too short: 5 characters, need at least 32".
func CheckAdminToken(token string) error {
	if n := utf8.RuneCountInString(token); n < MinAdminTokenLen {
		return fmt.Errorf("admin token too short: %d characters, need at least %d", n, MinAdminTokenLen)
	}
	return nil
}

// Defaults of the failed-login slowdown (Config.LoginDelay and
// Config.LoginDelayMax), the same figures as the MQTT broker's.
const (
	DefaultLoginDelay    = 100 * time.Millisecond
	DefaultLoginDelayMax = time.Second
	// LoginFailWindow is the counting window: a failure that comes more
	// than this after the first failure of the current count starts a new
	// count (as the broker's login limiter does).
	LoginFailWindow = time.Minute
	// maxLoginTracked bounds the client addresses the login limiter tracks;
	// when full, addresses whose window has passed are forgotten, and if
	// that is not enough every address is (the limiter fails open rather
	// than grow).
	maxLoginTracked = 16384
)

// loginLimiter counts the failed logins (a wrong admin or user token) of
// each client address and says how long to hold back the 401: the n-th
// failure within LoginFailWindow waits n × delay, at most maxDelay. The
// wait is the failing request's own (its handler goroutine, on a timer); the
// limiter holds its mutex only for a map update. A nil *loginLimiter never
// delays.
type loginLimiter struct {
	delay, maxDelay time.Duration
	now             func() time.Time
	failures        prometheus.Counter

	mu sync.Mutex
	m  map[string]*loginEntry
}

type loginEntry struct {
	fails int
	since time.Time // start of the counting window
}

func newLoginLimiter(delay, maxDelay time.Duration) *loginLimiter {
	if delay < 0 {
		return nil
	}
	if delay == 0 {
		delay = DefaultLoginDelay
	}
	if maxDelay <= 0 {
		maxDelay = DefaultLoginDelayMax
	}
	return &loginLimiter{
		delay: delay, maxDelay: maxDelay, now: time.Now, m: make(map[string]*loginEntry),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "swapd", Subsystem: "http", Name: "auth_failures_total",
			Help: "HTTP requests answered 401 for a wrong admin or user token (each answered after the login slowdown).",
		}),
	}
}

// failed records a failed login of host and returns how long to hold the
// answer back.
func (l *loginLimiter) failed(host string) time.Duration {
	if l == nil {
		return 0
	}
	l.failures.Inc()
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[host]
	if e == nil {
		if len(l.m) >= maxLoginTracked {
			l.sweep(now)
		}
		e = &loginEntry{since: now}
		l.m[host] = e
	}
	if now.Sub(e.since) > LoginFailWindow {
		e.fails, e.since = 0, now
	}
	e.fails++
	return min(time.Duration(e.fails)*l.delay, l.maxDelay)
}

// sweep forgets addresses whose window has passed; if that is not enough,
// every address. Called with mu held.
func (l *loginLimiter) sweep(now time.Time) {
	for k, e := range l.m {
		if now.Sub(e.since) > LoginFailWindow {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxLoginTracked {
		clear(l.m)
	}
}

// LoginFailed holds the request back as a failed login of its client
// address (see Config.LoginDelay) and returns when the delay has passed or
// the request is cancelled. Call it before answering 401 for a wrong token;
// the WebSocket endpoints use it too. It blocks only the calling request.
func (a *API) LoginFailed(r *http.Request) {
	d := a.logins.failed(a.cfg.ClientIP(r))
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.Context().Done():
	}
}

// headerBearer is the bearer token of the Authorization header only; the
// admin token is never taken from the query.
func headerBearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

func (a *API) isAdmin(r *http.Request) bool {
	t := headerBearer(r)
	return t != "" && subtle.ConstantTimeCompare([]byte(t), []byte(a.cfg.AdminToken)) == 1
}

// AdminOnly wraps h for the server's other admin-only routes (the
// profiles): the same token check and 401 answers as /api/admin/….
func (a *API) AdminOnly(h http.HandlerFunc) http.HandlerFunc {
	return a.adapt(a.admin(func(w http.ResponseWriter, r *http.Request) error {
		h(w, r)
		return nil
	}))
}

// admin lets through requests that carry the admin token in the
// Authorization header. A token in ?token= is refused (it would end up in
// proxy and access logs); a wrong token is answered after the login
// slowdown.
func (a *API) admin(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if headerBearer(r) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="swapd-admin"`)
			msg := "the admin token is required: Authorization: Bearer <token>"
			if r.Header.Get("Authorization") == "" && r.URL.Query().Has("token") {
				msg = "the admin token is accepted only in the Authorization header (Authorization: Bearer <token>), never as ?token="
			}
			return &apiError{status: http.StatusUnauthorized, code: "unauthorized", message: msg}
		}
		if !a.isAdmin(r) {
			a.LoginFailed(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="swapd-admin", error="invalid_token"`)
			return errorf(http.StatusUnauthorized, "unauthorized", "the admin token is wrong")
		}
		return h(w, r)
	}
}
