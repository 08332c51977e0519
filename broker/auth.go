package broker

import (
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/swapbridge/swapbridge/wire"
)

// maxNegative bounds the negative cache; when full, expired entries are
// swept and, if that is not enough, the whole negative cache is dropped.
const maxNegative = 4096

// credCache caches station secret hashes. Positive entries live until
// invalidated; negative ones (unknown ids) for ttl.
type credCache struct {
	src      Credentials
	notFound error
	ttl      time.Duration // <0: no negative caching

	mu  sync.RWMutex
	pos map[string]cred
	neg map[string]time.Time // id → expiry
	gen uint64               // bumped by invalidate; a load started before it is not cached
}

func newCredCache(src Credentials, notFound error, ttl time.Duration) *credCache {
	return &credCache{
		src:      src,
		notFound: notFound,
		ttl:      ttl,
		pos:      make(map[string]cred),
		neg:      make(map[string]time.Time),
	}
}

// lookup returns the secret hashes of sid, or a refusal reason.
func (c *credCache) lookup(sid string) (h cred, reason string, err error) {
	c.mu.RLock()
	h, ok := c.pos[sid]
	if ok {
		c.mu.RUnlock()
		return h, "", nil
	}
	exp, neg := c.neg[sid]
	gen := c.gen
	c.mu.RUnlock()
	if neg && time.Now().Before(exp) {
		return h, ReasonUnknownStation, nil
	}

	h, err = c.load(sid)
	unknown := err != nil && (c.notFound == nil || errors.Is(err, c.notFound))
	if err != nil && !unknown {
		return cred{}, ReasonStoreError, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		// Invalidated while loading: use the answer once, cache nothing.
	} else if err == nil {
		c.pos[sid] = h
		delete(c.neg, sid)
	} else if c.ttl > 0 {
		now := time.Now()
		if len(c.neg) >= maxNegative {
			for k, e := range c.neg {
				if !now.Before(e) {
					delete(c.neg, k)
				}
			}
			if len(c.neg) >= maxNegative {
				clear(c.neg)
			}
		}
		c.neg[sid] = now.Add(c.ttl)
	}
	if unknown {
		return cred{}, ReasonUnknownStation, nil
	}
	return h, "", nil
}

func (c *credCache) invalidate(sid string) {
	c.mu.Lock()
	delete(c.pos, sid)
	delete(c.neg, sid)
	c.gen++
	c.mu.Unlock()
}

// authenticate decides a CONNECT. It returns "" to accept or the refusal
// reason. err carries a store failure for logging. It does not allocate
// when the hash is cached.
func (c *credCache) authenticate(clientID string, username, password []byte, passwordSet bool) (reason string, err error) {
	switch {
	case clientID != string(username):
		return ReasonClientIDMismatch, nil
	case !wire.ValidID(clientID):
		return ReasonInvalidID, nil
	case clientID == mqtt.InlineClientId:
		return ReasonReservedID, nil
	case !passwordSet || len(password) == 0:
		return ReasonNoPassword, nil
	}
	want, reason, err := c.lookup(clientID)
	if reason != "" {
		return reason, err
	}
	if !want.accepts(sha256.Sum256(password), time.Now()) {
		return ReasonBadSecret, nil
	}
	return "", nil
}

// allowed is the station ACL: sid may publish (write) only to its own
// status, telemetry and ack topics and subscribe to (read) only its own cmd
// topic. O(len(topic)) with topic bounded by the packet size, and no
// allocation.
func allowed(sid, topic string, write bool) bool {
	tsid, kind, ok := wire.ParseTopic(topic)
	if !ok || tsid != sid {
		return false
	}
	if write {
		return kind == wire.KindStatus || kind == wire.KindTelemetry || kind == wire.KindAck
	}
	return kind == wire.KindCmd
}
