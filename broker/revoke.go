package broker

import (
	"crypto/sha256"
	"crypto/subtle"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// RotatingCredentials is Credentials that also know a station's previous
// secret while a rotation's grace period runs (store.Store satisfies it).
// StationSecretHashes returns the SHA-256 of the current secret and, until
// previousUntil, of the previous one (zero values when there is none). When
// the Credentials given to New implement it, a CONNECT with either secret
// is accepted while it is valid.
type RotatingCredentials interface {
	StationSecretHashes(sid string) (current, previous [32]byte, previousUntil time.Time, err error)
}

// cred is what the cache keeps of one station: its current secret hash and,
// until until, its previous one.
type cred struct {
	cur, prev [32]byte
	until     time.Time
}

// accepts reports whether h (the SHA-256 of a password) is a valid secret
// of the station at now. Constant-time in h.
func (c cred) accepts(h [32]byte, now time.Time) bool {
	if subtle.ConstantTimeCompare(h[:], c.cur[:]) == 1 {
		return true
	}
	return c.inGrace(h, now)
}

// inGrace reports whether h is the previous secret and still valid at now.
func (c cred) inGrace(h [32]byte, now time.Time) bool {
	return !c.until.IsZero() && now.Before(c.until) && subtle.ConstantTimeCompare(h[:], c.prev[:]) == 1
}

// load reads sid's secrets from the source.
func (c *credCache) load(sid string) (cred, error) {
	if rc, ok := c.src.(RotatingCredentials); ok {
		cur, prev, until, err := rc.StationSecretHashes(sid)
		return cred{cur: cur, prev: prev, until: until}, err
	}
	h, err := c.src.StationSecretHash(sid)
	return cred{cur: h}, err
}

// logins remembers, for each live station connection, the hash of the
// secret it logged in with, and the timer that closes it when it logged in
// with a previous secret whose grace period ends. The zero value is ready.
type logins struct {
	mu      sync.Mutex
	closed  bool
	hash    map[*mqtt.Client][32]byte
	expires map[*mqtt.Client]*time.Timer
}

func (l *logins) record(cl *mqtt.Client, password []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hash == nil {
		l.hash = make(map[*mqtt.Client][32]byte)
		l.expires = make(map[*mqtt.Client]*time.Timer)
	}
	l.hash[cl] = sha256.Sum256(password)
}

func (l *logins) lookup(cl *mqtt.Client) ([32]byte, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h, ok := l.hash[cl]
	return h, ok
}

// expireAt arms (or moves) the timer that runs f at t for cl.
func (l *logins) expireAt(cl *mqtt.Client, t time.Time, f func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if _, live := l.hash[cl]; !live {
		return
	}
	if old := l.expires[cl]; old != nil {
		old.Stop()
	}
	l.expires[cl] = time.AfterFunc(time.Until(t), f)
}

func (l *logins) forget(cl *mqtt.Client) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tm := l.expires[cl]; tm != nil {
		tm.Stop()
	}
	delete(l.expires, cl)
	delete(l.hash, cl)
}

// stop stops every timer; later expireAt calls arm none.
func (l *logins) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for _, tm := range l.expires {
		tm.Stop()
	}
	clear(l.expires)
}

// Revoke applies a change of sid's credentials at once (call it after
// rotating its secret or deleting the station): the cached secret is
// dropped and the station's live session is closed unless it logged in
// with a secret that is still valid. A session that logged in with the
// previous secret of a rotation with a grace period stays until that period
// ends and is closed then. It does not block on the network.
func (b *Broker) Revoke(sid string) {
	b.creds.invalidate(sid)
	b.mu.Lock()
	cl := b.sessions[sid]
	b.mu.Unlock()
	if cl != nil {
		b.checkLogin(cl)
	}
}

// sessionUp records the secret cl logged in with and checks it against the
// credentials as they are now, so that a login that raced a Revoke does not
// survive it. Called from OnSessionEstablished once cl is the live session.
func (b *Broker) sessionUp(cl *mqtt.Client, password []byte) {
	b.logins.record(cl, password)
	b.checkLogin(cl)
}

// checkLogin closes cl unless the secret it logged in with is still valid;
// for a previous secret in its grace period it arms a check at the end of
// that period.
func (b *Broker) checkLogin(cl *mqtt.Client) {
	if b.closing.Load() {
		return
	}
	h, ok := b.logins.lookup(cl)
	if !ok {
		return // not up yet: sessionUp checks it
	}
	c, reason, err := b.creds.lookup(cl.ID)
	now := time.Now()
	switch {
	case err != nil:
		// Fail closed: the station reconnects and is checked again.
		b.log.Warn("station credentials unreadable; closing its session", "station", cl.ID, "error", err)
	case reason != "":
		b.log.Info("station session closed: station removed", "station", cl.ID)
	case subtle.ConstantTimeCompare(h[:], c.cur[:]) == 1:
		return
	case c.inGrace(h, now):
		b.logins.expireAt(cl, c.until, func() { b.checkLogin(cl) })
		return
	default:
		b.log.Info("station session closed: secret revoked", "station", cl.ID)
	}
	b.dropClient(cl, packets.ErrNotAuthorized)
}
