package api

import (
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of RateLimit's zero fields.
const (
	DefaultRatePerIP    = 100   // requests per second per client address
	DefaultBurstPerIP   = 400   // requests at once per client address
	DefaultTrackedPerIP = 65536 // client addresses with a bucket at once
)

// RateLimit configures NewIPLimiter: a token bucket per client address.
type RateLimit struct {
	// Rate is the sustained requests per second of one address; 0 means
	// DefaultRatePerIP; negative disables the limiter.
	Rate float64
	// Burst is how many requests one address may make at once; 0 means
	// DefaultBurstPerIP.
	Burst int
	// MaxTracked bounds the addresses tracked; when full, addresses whose
	// bucket has refilled are forgotten, and if that is not enough every
	// bucket is reset (the limiter fails open rather than grow). 0 means
	// DefaultTrackedPerIP.
	MaxTracked int
	// ClientIP returns the address a request is counted against; nil means
	// the host part of Request.RemoteAddr. Set it behind a trusted proxy.
	ClientIP func(r *http.Request) string
	// Registerer receives swapd_http_rate_limited_total; nil: not exported.
	Registerer prometheus.Registerer
	// Clock is for tests; nil means time.Now.
	Clock func() time.Time
}

// IPLimiter limits the request rate of each client address. Wrap puts it in
// front of a handler: a request over the limit is answered 429 with
// Retry-After and the contract's error body, and never reaches the handler.
// A nil *IPLimiter allows everything. It is safe for concurrent use; no
// call blocks (one mutex held for a map lookup).
type IPLimiter struct {
	rate, burst float64
	max         int
	clientIP    func(*http.Request) string
	now         func() time.Time
	limited     prometheus.Counter

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewIPLimiter returns the limiter, or nil (allow everything) when
// cfg.Rate is negative.
func NewIPLimiter(cfg RateLimit) (*IPLimiter, error) {
	if cfg.Rate < 0 {
		return nil, nil
	}
	if cfg.Rate == 0 {
		cfg.Rate = DefaultRatePerIP
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultBurstPerIP
	}
	if cfg.MaxTracked <= 0 {
		cfg.MaxTracked = DefaultTrackedPerIP
	}
	if cfg.ClientIP == nil {
		cfg.ClientIP = remoteHost
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	l := &IPLimiter{
		rate: cfg.Rate, burst: float64(cfg.Burst), max: cfg.MaxTracked,
		clientIP: cfg.ClientIP, now: cfg.Clock, buckets: make(map[string]*bucket),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "swapd", Subsystem: "http", Name: "rate_limited_total",
			Help: "HTTP requests (WebSocket upgrades included) refused with 429 by the per-address rate limit.",
		}),
	}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(l.limited); err != nil {
			return nil, err
		}
	}
	return l, nil
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Allow takes one token of addr's bucket. When none is left it returns
// false and how long until the next token.
func (l *IPLimiter) Allow(addr string) (ok bool, retryAfter time.Duration) {
	if l == nil {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= l.max {
			l.sweep(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[addr] = b
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}

// sweep forgets buckets that have refilled (forgetting them changes
// nothing); if none has, it resets every bucket. Called with mu held.
func (l *IPLimiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for k, b := range l.buckets {
		if now.Sub(b.last) >= full {
			delete(l.buckets, k)
		}
	}
	if len(l.buckets) >= l.max {
		clear(l.buckets)
	}
}

// Tracked is the number of addresses with a bucket.
func (l *IPLimiter) Tracked() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Wrap returns next behind the limiter. A nil limiter returns next.
func (l *IPLimiter) Wrap(next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ok, after := l.Allow(l.clientIP(r))
		if !ok {
			l.limited.Inc()
			secs := int(math.Ceil(after.Seconds()))
			if secs < 1 {
				secs = 1
			}
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			writeError(w, http.StatusTooManyRequests, "rate_limited",
				"too many requests from your address; retry after "+strconv.Itoa(secs)+"s")
			return
		}
		next.ServeHTTP(w, r)
	})
}
