package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// Bridge is the domain the API drives: bookings, notifications, operator
// status and the station views. *bridge.Bridge satisfies it.
type Bridge interface {
	Book(ctx context.Context, userID, stationID string) (wire.Booking, error)
	Booking(userID, bookingID string) (wire.Booking, error)
	UserBookings(userID string) ([]wire.Booking, error)
	Cancel(ctx context.Context, userID, bookingID string) (wire.Booking, error)
	Collect(ctx context.Context, userID, bookingID string) (wire.Booking, error)
	Notify(ctx context.Context, userID string, n wire.Notification) error
	SetOperatorStatus(ctx context.Context, stationID, status string) error
	StationProvisioned(ctx context.Context, sid string) error
	StationViews() ([]wire.StationView, error)
	StationView(stationID string) (wire.StationView, error)
	StationExists(stationID string) bool
	StationRemover
}

// Store is the part of the store the API reads and provisions through.
// *store.Store satisfies it.
type Store interface {
	CreateStation(ctx context.Context, st store.Station) error
	Stations() ([]store.Station, error)
	CreateUser(ctx context.Context, u store.User) error
	User(id string) (store.User, error)
	UserByTokenHash(h [32]byte) (store.User, error)
	LastSeq() uint64
	FirstSeq() uint64
	// FirstSeqOf is the oldest seq from which ch's events are complete
	// (later than FirstSeq for a station whose own oldest events the
	// per-station cap removed).
	FirstSeqOf(ch store.Channel) uint64
	EventsAfter(ch store.Channel, since uint64, limit int) ([]store.Event, error)
	Credentials
}

// CredentialCache is told when a station's credentials change (the broker's
// auth cache).
type CredentialCache interface {
	Invalidate(stationID string)
	// Revoke applies a rotation or deletion of the station's secret and
	// closes a live session whose secret is no longer valid.
	Revoke(stationID string)
}

// Config configures the API. The zero value of every optional field is usable.
type Config struct {
	// AdminToken guards /api/admin/…; required, at least MinAdminTokenLen
	// characters. It is accepted only in the Authorization header.
	AdminToken string
	// LoginDelay slows down failed logins: a request with a wrong admin or
	// user token is answered 401 after n × LoginDelay, n being the failures
	// of its client address within LoginFailWindow, at most LoginDelayMax.
	// Only the failing request waits; a right token is never slowed. 0
	// means DefaultLoginDelay (100ms) and DefaultLoginDelayMax (1s);
	// negative LoginDelay turns the slowdown off.
	LoginDelay    time.Duration
	LoginDelayMax time.Duration
	// ClientIP returns the address failed logins are counted against; nil
	// means the host part of Request.RemoteAddr.
	ClientIP func(r *http.Request) string
	// CORSOrigins lists origins allowed to call the API from a browser; "*"
	// allows any origin (without credentials). Empty: no CORS headers.
	CORSOrigins []string
	// Registerer receives the HTTP metrics; Gatherer serves /metrics. Nil
	// Registerer: no HTTP metrics. Nil Gatherer: /metrics serves the default
	// registry.
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// Ready reports readiness for /readyz; nil means always ready.
	Ready func() error
	// Logger receives one line per request at debug level and errors at
	// error level; nil discards.
	Logger *slog.Logger
}

// API serves the HTTP API. Create it with New and mount it with Register.
type API struct {
	cfg     Config
	bridge  Bridge
	store   Store
	creds   CredentialCache
	log     *slog.Logger
	latency *prometheus.HistogramVec
	logins  *loginLimiter // nil: failed logins are not slowed
	reqID   atomic.Uint64
	idBase  string

	// sessions closes a user's WebSockets on revocation (credentials.go).
	sessions UserSessions
}

// New returns the API. creds may be nil.
func New(cfg Config, st Store, b Bridge, creds CredentialCache) (*API, error) {
	if cfg.AdminToken == "" {
		return nil, errors.New("api: an admin token is required")
	}
	if err := CheckAdminToken(cfg.AdminToken); err != nil {
		return nil, err
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = remoteHost
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	a := &API{cfg: cfg, bridge: b, store: st, creds: creds, log: cfg.Logger, logins: newLoginLimiter(cfg.LoginDelay, cfg.LoginDelayMax)}
	var rnd [4]byte
	rand.Read(rnd[:])
	a.idBase = hex.EncodeToString(rnd[:])
	a.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "swapd",
		Subsystem: "http",
		Name:      "request_duration_seconds",
		Help:      "HTTP request latency by route and status class.",
		Buckets:   []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"route", "code"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(a.latency); err != nil {
			return nil, err
		}
		if a.logins != nil {
			if err := cfg.Registerer.Register(a.logins.failures); err != nil {
				return nil, err
			}
		}
	}
	return a, nil
}

// handlerFunc is an HTTP handler that returns its error instead of
// answering it: adapt maps every error to the contract's error body, in one
// place (see fail).
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// adapt turns h into an http.HandlerFunc that answers h's error with fail.
// h must not have written a response when it returns an error.
func (a *API) adapt(h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			a.fail(w, r, err)
		}
	}
}

type route struct {
	method, path string
	h            handlerFunc
}

func (a *API) routes() []route {
	return []route{
		{"GET", "/api/stations", a.listStations},
		{"GET", "/api/stations/{sid}", a.getStation},
		{"POST", "/api/bookings", a.user(a.createBooking)},
		{"GET", "/api/bookings", a.user(a.listBookings)},
		{"GET", "/api/bookings/{id}", a.user(a.bookingOp(a.getBooking))},
		{"POST", "/api/bookings/{id}/cancel", a.user(a.bookingOp(a.cancelBooking))},
		{"POST", "/api/bookings/{id}/collect", a.user(a.bookingOp(a.collectBooking))},
		{"GET", "/api/events", a.listEvents},
		{"POST", "/api/admin/stations", a.admin(a.createStation)},
		{"GET", "/api/admin/stations", a.admin(a.adminListStations)},
		{"POST", "/api/admin/users", a.admin(a.createUser)},
		{"POST", "/api/admin/notifications", a.admin(a.sendNotification)},
		{"POST", "/api/admin/stations/{sid}/status", a.admin(a.setStationStatus)},
		{"POST", "/api/admin/stations/{sid}/secret", a.admin(a.rotateSecret)},
		{"DELETE", "/api/admin/stations/{sid}", a.admin(a.deleteStation)},
		{"POST", "/api/admin/users/{uid}/tokens", a.admin(a.addToken)},
		{"DELETE", "/api/admin/users/{uid}/tokens", a.admin(a.revokeTokens)},
		{"DELETE", "/api/admin/users/{uid}", a.admin(a.deleteUser)},
		{"GET", "/healthz", a.healthz},
		{"GET", "/readyz", a.readyz},
		{"GET", "/metrics", a.metrics},
	}
}

// Routes lists "METHOD path" of every route the API registers, for the
// OpenAPI consistency test and for documentation.
func (a *API) Routes() []string {
	var out []string
	for _, r := range a.routes() {
		out = append(out, r.method+" "+r.path)
	}
	return out
}

// Register mounts every route on mux, with JSON 404 and 405 answers for
// /api/… paths that match no route or no method.
func (a *API) Register(mux *http.ServeMux) {
	allowed := map[string][]string{}
	var order []string
	for _, rt := range a.routes() {
		mux.Handle(rt.method+" "+rt.path, a.wrap(rt.path, rt.h))
		if _, ok := allowed[rt.path]; !ok {
			order = append(order, rt.path)
		}
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	for _, p := range order {
		methods := strings.Join(allowed[p], ", ")
		mux.Handle(p, a.wrap(p, func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodOptions {
				w.Header().Set("Allow", methods+", OPTIONS")
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			w.Header().Set("Allow", methods)
			return errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed here; use %s", r.Method, methods)
		}))
	}
	mux.Handle("/api/", a.wrap("/api/", func(w http.ResponseWriter, r *http.Request) error {
		return errorf(http.StatusNotFound, "not_found", "no such endpoint: %s", r.URL.Path)
	}))
}

// statusWriter records the status code for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// wrap adapts h (see adapt) and adds the request id, CORS, panic recovery,
// logging and metrics.
func (a *API) wrap(route string, h handlerFunc) http.Handler {
	serve := a.adapt(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if id == "" || len(id) > 64 {
			id = a.idBase + "-" + strconv.FormatUint(a.reqID.Add(1), 10)
		}
		w.Header().Set("X-Request-Id", id)
		a.cors(w, r)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				a.log.Error("http handler panic", "request_id", id, "route", route, "panic", p)
				if sw.status == 0 {
					writeError(sw, http.StatusInternalServerError, "internal", "internal error; request id "+id)
				}
			}
			d := time.Since(start)
			a.latency.WithLabelValues(route, strconv.Itoa(sw.status/100)+"xx").Observe(d.Seconds())
			a.log.Debug("http", "request_id", id, "method", r.Method, "path", r.URL.Path, "status", sw.status, "dur", d)
		}()
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		serve(sw, r)
	})
}

func (a *API) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	if origin == "" || len(a.cfg.CORSOrigins) == 0 {
		return
	}
	for _, o := range a.cfg.CORSOrigins {
		if o == "*" || o == origin {
			h := w.Header()
			if o == "*" {
				h.Set("Access-Control-Allow-Origin", "*")
			} else {
				h.Set("Access-Control-Allow-Origin", origin)
				h.Add("Vary", "Origin")
			}
			h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-Id")
			h.Set("Access-Control-Max-Age", "600")
			return
		}
	}
}

// fail answers with the error: an *apiError as it is, a domain sentinel
// mapped to its status, anything else as a 500 that is logged.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	if errors.As(err, &ae) {
		writeError(w, ae.status, ae.code, ae.message)
		return
	}
	if status, code, msg, ok := domainError(err); ok {
		writeError(w, status, code, msg)
		return
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusServiceUnavailable, "timeout", "the request was cancelled or timed out")
		return
	}
	id := w.Header().Get("X-Request-Id")
	a.log.Error("http request failed", "request_id", id, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal", "internal error; request id "+id)
}

// bearer extracts a user's bearer token from the Authorization header or,
// for clients that cannot set headers, the token query parameter. The admin
// token is only ever taken from the header (see isAdmin).
func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			return strings.TrimSpace(h[7:])
		}
		return ""
	}
	return r.URL.Query().Get("token")
}

type ctxKey struct{}

func userFrom(r *http.Request) string {
	uid, _ := r.Context().Value(ctxKey{}).(string)
	return uid
}

// UserForToken resolves a user token to its user id; it is the
// Authenticator of the WebSocket layer too.
func (a *API) UserForToken(token string) (string, error) {
	if token == "" || len(token) > 256 {
		return "", ErrBadToken
	}
	u, err := a.store.UserByTokenHash(HashToken(token))
	if errors.Is(err, store.ErrNotFound) {
		return "", ErrBadToken
	}
	if err != nil {
		return "", err
	}
	return u.ID, nil
}

// ErrBadToken is returned by UserForToken for a missing or unknown token.
var ErrBadToken = errors.New("api: unknown token")

// user lets through requests with a valid user token and gives h the user
// id (userFrom); a wrong token is answered after the login slowdown.
func (a *API) user(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		t := bearer(r)
		if t == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="swapd"`)
			return errorf(http.StatusUnauthorized, "unauthorized", "a user token is required: Authorization: Bearer <token>")
		}
		uid, err := a.UserForToken(t)
		if errors.Is(err, ErrBadToken) {
			a.LoginFailed(r)
			w.Header().Set("WWW-Authenticate", `Bearer realm="swapd", error="invalid_token"`)
			return errorf(http.StatusUnauthorized, "unauthorized", "the token is not valid")
		}
		if err != nil {
			return err
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, uid)))
	}
}

// HashToken is the SHA-256 of a secret or token, as the store keeps it.
func HashToken(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// NewSecret returns a new 256-bit random secret, URL-safe base64 without
// padding (43 characters), safe to pass on a command line.
func NewSecret() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Ready != nil {
		if err := a.cfg.Ready(); err != nil {
			return &apiError{status: http.StatusServiceUnavailable, code: "not_ready", message: err.Error()}
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) error {
	g := a.cfg.Gatherer
	if g == nil {
		g = prometheus.DefaultGatherer
	}
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	return nil
}
