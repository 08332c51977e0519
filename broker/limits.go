package broker

import (
	"net"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Defaults of the abuse limits in Config.
const (
	DefaultAuthFailures     = 10
	DefaultAuthHostFailures = 100
	DefaultAuthFailWindow   = time.Minute
	DefaultAuthBlock        = 5 * time.Minute
	DefaultAuthDelay        = 100 * time.Millisecond
	DefaultPublishRate      = 50
	DefaultPublishBurst     = 200
	DefaultPublishWait      = 2 * time.Second

	// maxAuthDelay caps the slowdown of one failed CONNECT.
	maxAuthDelay = time.Second
	// maxAuthTracked bounds the (address, client id) pairs the login
	// limiter tracks, and the addresses.
	maxAuthTracked = 16384
)

// authLimiter counts failed CONNECTs per (remote host, client id) and per
// remote host. Each failure of a pair is answered a little later than the
// one before, and past max failures within window the pair is refused for
// block, whatever its credentials. Past hostMax failures of a host within
// window, every failure from it is answered maxAuthDelay late for block;
// correct credentials from that host are not affected.
type authLimiter struct {
	max, hostMax         int // hostMax ≤ 0: no per-host ceiling
	window, block, delay time.Duration

	mu    sync.Mutex
	pairs map[authKey]*authEntry
	hosts map[string]*authEntry
}

// authKey is a remote host and a client id (a valid station id, or "").
type authKey struct{ host, id string }

type authEntry struct {
	fails        int
	since        time.Time // start of the counting window
	blockedUntil time.Time
}

func newAuthLimiter(max, hostMax int, window, block, delay time.Duration) *authLimiter {
	if max < 0 {
		return nil
	}
	return &authLimiter{
		max: max, hostMax: hostMax, window: window, block: block, delay: delay,
		pairs: make(map[authKey]*authEntry), hosts: make(map[string]*authEntry),
	}
}

// authPair is the key of a CONNECT of client id from host. Ids that are no
// station id (they may be 64 KiB long) share the key of the empty id.
func authPair(host, id string) authKey {
	if !wire.ValidID(id) {
		id = ""
	}
	return authKey{host, id}
}

// blocked reports whether client id is refused from host now.
func (l *authLimiter) blocked(host, id string, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.pairs[authPair(host, id)]
	return e != nil && now.Before(e.blockedUntil)
}

// failed records a failed CONNECT of client id from host and returns how
// long to hold the refusal back, whether this failure blocked the pair, and
// whether it took the host past its ceiling.
func (l *authLimiter) failed(host, id string, now time.Time) (delay time.Duration, blocked, hostBlocked bool) {
	if l == nil {
		return 0, false, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	over := false
	if l.hostMax > 0 {
		if h := track(l.hosts, host, now, l.window); h != nil {
			over = now.Before(h.blockedUntil)
			if h.fails++; h.fails >= l.hostMax {
				h.blockedUntil = now.Add(l.block)
				h.fails, h.since = 0, now
				hostBlocked, over = !over, true
			}
		}
	}
	if e := track(l.pairs, authPair(host, id), now, l.window); e != nil {
		if e.fails++; e.fails >= l.max {
			e.blockedUntil = now.Add(l.block)
			e.fails, e.since = 0, now
			return 0, true, hostBlocked
		}
		if l.delay > 0 {
			delay = min(time.Duration(e.fails)*l.delay, maxAuthDelay)
		}
	}
	if over {
		delay = maxAuthDelay
	}
	return delay, false, hostBlocked
}

// track returns the entry of k in m, created if need be, with its window
// restarted when it is over; nil when m is full of entries still needed.
// Called with mu held.
func track[K comparable](m map[K]*authEntry, k K, now time.Time, window time.Duration) *authEntry {
	e := m[k]
	if e == nil {
		if len(m) >= maxAuthTracked {
			sweep(m, now, window)
			if len(m) >= maxAuthTracked {
				return nil // every tracked key is blocked: do not grow
			}
		}
		e = &authEntry{since: now}
		m[k] = e
	}
	if now.Sub(e.since) > window {
		e.fails, e.since = 0, now
	}
	return e
}

// sweep forgets keys that are neither blocked nor within a window; if that
// is not enough, it forgets every key that is not blocked. Called with mu
// held.
func sweep[K comparable](m map[K]*authEntry, now time.Time, window time.Duration) {
	for k, e := range m {
		if !now.Before(e.blockedUntil) && now.Sub(e.since) > window {
			delete(m, k)
		}
	}
	if len(m) >= maxAuthTracked {
		for k, e := range m {
			if !now.Before(e.blockedUntil) {
				delete(m, k)
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
