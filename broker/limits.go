package broker

import (
	"net"
	"sync"
	"time"
)

// Defaults of the abuse limits in Config.
const (
	DefaultAuthFailures   = 10
	DefaultAuthFailWindow = time.Minute
	DefaultAuthBlock      = 5 * time.Minute
	DefaultAuthDelay      = 100 * time.Millisecond
	DefaultPublishRate    = 50
	DefaultPublishBurst   = 200
	DefaultPublishWait    = 2 * time.Second

	// maxAuthDelay caps the slowdown of one failed CONNECT.
	maxAuthDelay = time.Second
	// maxAuthTracked bounds the remote addresses the login limiter tracks.
	maxAuthTracked = 16384
)

// authLimiter counts failed CONNECTs per remote host: each failure is
// answered a little later than the one before, and past max failures within
// window every CONNECT from the host is refused for block.
type authLimiter struct {
	max                  int
	window, block, delay time.Duration

	mu sync.Mutex
	m  map[string]*authEntry
}

type authEntry struct {
	fails        int
	since        time.Time // start of the counting window
	blockedUntil time.Time
}

func newAuthLimiter(max int, window, block, delay time.Duration) *authLimiter {
	if max < 0 {
		return nil
	}
	return &authLimiter{max: max, window: window, block: block, delay: delay, m: make(map[string]*authEntry)}
}

// blocked reports whether host is refused now.
func (l *authLimiter) blocked(host string, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[host]
	return e != nil && now.Before(e.blockedUntil)
}

// failed records a failed CONNECT of host and returns how long to hold the
// refusal back, and whether this failure blocked the host.
func (l *authLimiter) failed(host string, now time.Time) (delay time.Duration, blocked bool) {
	if l == nil {
		return 0, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.m[host]
	if e == nil {
		if len(l.m) >= maxAuthTracked {
			l.sweep(now)
			if len(l.m) >= maxAuthTracked {
				return 0, false // every tracked host is blocked: do not grow
			}
		}
		e = &authEntry{since: now}
		l.m[host] = e
	}
	if now.Sub(e.since) > l.window {
		e.fails, e.since = 0, now
	}
	e.fails++
	if e.fails >= l.max {
		e.blockedUntil = now.Add(l.block)
		e.fails, e.since = 0, now
		return 0, true
	}
	if l.delay <= 0 {
		return 0, false
	}
	return min(time.Duration(e.fails)*l.delay, maxAuthDelay), false
}

// sweep forgets hosts that are neither blocked nor within a window; if
// that is not enough, it forgets every host that is not blocked. Called
// with mu held.
func (l *authLimiter) sweep(now time.Time) {
	for k, e := range l.m {
		if !now.Before(e.blockedUntil) && now.Sub(e.since) > l.window {
			delete(l.m, k)
		}
	}
	if len(l.m) >= maxAuthTracked {
		for k, e := range l.m {
			if !now.Before(e.blockedUntil) {
				delete(l.m, k)
			}
		}
	}
}

// remoteHost is the host part of a client's remote address.
func remoteHost(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// pubLimiter is a token bucket per station: rate publishes per second,
// burst at once. A publish over it may wait up to maxWait for its token.
type pubLimiter struct {
	rate, burst float64
	maxWait     time.Duration

	mu sync.Mutex
	m  map[string]*pubBucket
}

type pubBucket struct {
	tokens float64 // may go negative: tokens reserved by waiting publishes
	last   time.Time
}

func newPubLimiter(rate float64, burst int, maxWait time.Duration) *pubLimiter {
	if rate < 0 {
		return nil
	}
	return &pubLimiter{rate: rate, burst: float64(burst), maxWait: maxWait, m: make(map[string]*pubBucket)}
}

// reserve takes a token of sid's bucket and returns how long the publish
// must wait for it, or ok=false when that would be longer than maxWait (no
// token is taken then).
func (l *pubLimiter) reserve(sid string, now time.Time) (wait time.Duration, ok bool) {
	if l == nil {
		return 0, true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.m[sid]
	if b == nil {
		b = &pubBucket{tokens: l.burst, last: now}
		l.m[sid] = b
	} else if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = min(l.burst, b.tokens+el*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	wait = time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	if wait > l.maxWait {
		return 0, false
	}
	b.tokens--
	return wait, true
}
