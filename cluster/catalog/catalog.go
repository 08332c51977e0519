// Package catalog keeps a cluster's catalogue — provisioned stations with
// their secret hashes, users and user tokens — in a replicated JetStream
// key-value bucket, and applies it to each node's local view (a
// store.Store), where authentication and the API read it.
//
// Writes go to the bucket, with the bucket's compare-and-set deciding what
// the single node's store decides in one transaction: Create fails when
// the key exists (a station or user id taken, a token hash in use), and an
// update names the revision it read. Every node watches the bucket and
// applies each entry to its view as it is (store's replica writes); a
// write returns once this node's view holds it, so a client reads its own
// writes on the node it wrote through. Other nodes see it after the
// watch's delay, milliseconds.
package catalog

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// DefaultBucket names the catalogue's bucket.
const DefaultBucket = "SWAP_CATALOG"

// Key prefixes in the bucket.
const (
	pStation = "station."
	pUser    = "user."
	pToken   = "token."
)

// ErrViewBehind: the local view did not apply a write in time.
var ErrViewBehind = errors.New("catalog: the local view is behind the catalogue")

// Config configures a Catalog.
type Config struct {
	// JS is the JetStream context; required.
	JS jetstream.JetStream
	// View is the local store the catalogue is applied to; required.
	View *store.Store
	// Bucket: DefaultBucket when empty. Replicas: 0 means 1.
	Bucket   string
	Replicas int
	// OnStation is called after a change of a station's entry (created,
	// secret rotated, deleted) was applied to the view: the broker's
	// Revoke. OnUserTokens after a token of the user was removed: the
	// hub's DisconnectUser. Both on the watch goroutine; they must not
	// block for long.
	OnStation    func(sid string)
	OnUserTokens func(uid string)
	// ReadWait bounds a write's wait for the view; 0 means 10 s.
	ReadWait time.Duration
	Logger   *slog.Logger
}

// Catalog is the cluster's catalogue. Create it with Open.
type Catalog struct {
	cfg  Config
	lg   *slog.Logger
	kv   jetstream.KeyValue
	view *store.Store
	w    jetstream.KeyWatcher
	stop context.CancelFunc
	done chan struct{}

	mu       sync.Mutex
	applied  uint64        // highest revision applied to the view
	advanced chan struct{} // closed and replaced when applied advances
	failed   error         // the watch ended or an apply failed
}

type stationEntry struct {
	Name       string    `json:"name"`
	Slots      int       `json:"slots"`
	Lat        float64   `json:"lat"`
	Lon        float64   `json:"lon"`
	CreatedAt  time.Time `json:"created_at"`
	SecretHash string    `json:"secret_hash"`
	PrevHash   string    `json:"prev_hash,omitempty"`
	PrevUntil  time.Time `json:"prev_until,omitzero"`
}

type userEntry struct {
	TokenHash string    `json:"token_hash"`
	CreatedAt time.Time `json:"created_at"`
}

type tokenEntry struct {
	User      string    `json:"user"`
	CreatedAt time.Time `json:"created_at"`
}

// Open creates (or binds to) the bucket, starts applying it to the view,
// and returns once the view holds every entry the bucket had.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.JS == nil || cfg.View == nil {
		return nil, errors.New("catalog: JS and View are required")
	}
	if cfg.Bucket == "" {
		cfg.Bucket = DefaultBucket
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.ReadWait == 0 {
		cfg.ReadWait = 10 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	kv, err := cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "swapd: stations, users and tokens",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: bucket %s: %w", cfg.Bucket, err)
	}
	wctx, stop := context.WithCancel(context.Background())
	w, err := kv.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("catalog: watch %s: %w", cfg.Bucket, err)
	}
	c := &Catalog{cfg: cfg, lg: lg.With("part", "catalog"), kv: kv, view: cfg.View, w: w, stop: stop,
		done: make(chan struct{}), advanced: make(chan struct{})}
	initial := make(chan struct{})
	go c.watch(initial)
	select {
	case <-initial:
	case <-c.done:
		c.Close()
		return nil, c.err()
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
	return c, nil
}

// Close stops the watch.
func (c *Catalog) Close() error {
	c.stop()
	_ = c.w.Stop()
	<-c.done
	return nil
}

func (c *Catalog) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// watch applies the bucket's entries to the view, in revision order.
func (c *Catalog) watch(initial chan struct{}) {
	defer close(c.done)
	for e := range c.w.Updates() {
		if e == nil {
			if initial != nil {
				close(initial)
				initial = nil
			}
			continue
		}
		if err := c.apply(e); err != nil {
			c.lg.Error("catalog: applying an entry to the local view failed", "key", e.Key(), "revision", e.Revision(), "error", err)
			c.mu.Lock()
			c.failed = err
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		if e.Revision() > c.applied {
			c.applied = e.Revision()
			close(c.advanced)
			c.advanced = make(chan struct{})
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	if c.failed == nil {
		c.failed = errors.New("catalog: the watch ended")
	}
	c.mu.Unlock()
}

func (c *Catalog) apply(e jetstream.KeyValueEntry) error {
	key := e.Key()
	deleted := e.Operation() != jetstream.KeyValuePut
	var after func()
	_, err := c.view.Update(context.Background(), func(tx *store.Tx) error {
		switch {
		case strings.HasPrefix(key, pStation):
			sid := key[len(pStation):]
			after = func() {
				if c.cfg.OnStation != nil {
					c.cfg.OnStation(sid)
				}
			}
			if deleted {
				return tx.RemoveStation(sid)
			}
			var v stationEntry
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return fmt.Errorf("station %s: %w", sid, err)
			}
			st := store.Station{ID: sid, Name: v.Name, Slots: v.Slots, Lat: v.Lat, Lon: v.Lon, CreatedAt: v.CreatedAt}
			var prev [32]byte
			if err := unhex(v.SecretHash, &st.SecretHash); err != nil {
				return fmt.Errorf("station %s: %w", sid, err)
			}
			if v.PrevHash != "" {
				if err := unhex(v.PrevHash, &prev); err != nil {
					return fmt.Errorf("station %s: %w", sid, err)
				}
			}
			return tx.PutStation(st, prev, v.PrevUntil)
		case strings.HasPrefix(key, pUser):
			uid := key[len(pUser):]
			if deleted {
				after = func() {
					if c.cfg.OnUserTokens != nil {
						c.cfg.OnUserTokens(uid)
					}
				}
				return tx.RemoveUser(uid)
			}
			var v userEntry
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return fmt.Errorf("user %s: %w", uid, err)
			}
			u := store.User{ID: uid, CreatedAt: v.CreatedAt}
			if err := unhex(v.TokenHash, &u.TokenHash); err != nil {
				return fmt.Errorf("user %s: %w", uid, err)
			}
			return tx.PutUser(u)
		case strings.HasPrefix(key, pToken):
			var h [32]byte
			if err := unhex(key[len(pToken):], &h); err != nil {
				return fmt.Errorf("token key %s: %w", key, err)
			}
			if deleted {
				if owner := tx.TokenUser(h); owner != "" {
					after = func() {
						if c.cfg.OnUserTokens != nil {
							c.cfg.OnUserTokens(owner)
						}
					}
				}
				return tx.RemoveToken(h)
			}
			var v tokenEntry
			if err := json.Unmarshal(e.Value(), &v); err != nil {
				return fmt.Errorf("token: %w", err)
			}
			return tx.PutToken(v.User, h, v.CreatedAt)
		}
		return nil // a key of a later version: not ours
	})
	if err != nil {
		return err
	}
	if after != nil {
		after()
	}
	return nil
}

func unhex(s string, h *[32]byte) error {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return fmt.Errorf("bad hash %q", s)
	}
	copy(h[:], b)
	return nil
}

// waitApplied waits until the view applied rev.
func (c *Catalog) waitApplied(ctx context.Context, rev uint64) error {
	t := time.NewTimer(c.cfg.ReadWait)
	defer t.Stop()
	for {
		c.mu.Lock()
		applied, ch, failed := c.applied, c.advanced, c.failed
		c.mu.Unlock()
		if applied >= rev {
			return nil
		}
		if failed != nil {
			return fmt.Errorf("catalog: %w", failed)
		}
		select {
		case <-ch:
		case <-c.done:
		case <-t.C:
			return fmt.Errorf("%w: at revision %d, waiting for %d", ErrViewBehind, applied, rev)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// waitLatest waits until the view applied the bucket as it is now (after
// a delete, whose revision the client does not return).
func (c *Catalog) waitLatest(ctx context.Context) error {
	ks, err := c.kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	var last uint64
	if s, ok := ks.(*jetstream.KeyValueBucketStatus); ok && s.StreamInfo() != nil {
		last = s.StreamInfo().State.LastSeq
	}
	return c.waitApplied(ctx, last)
}

func hexHash(h [32]byte) string { return hex.EncodeToString(h[:]) }

// CreateStation provisions st; store.ErrExists if the id is taken. The
// rules are store.CreateStation's.
func (c *Catalog) CreateStation(ctx context.Context, st store.Station) error {
	if err := wire.CheckID("station id", st.ID); err != nil {
		return fmt.Errorf("catalog: create station: %w", err)
	}
	if st.SecretHash == ([32]byte{}) {
		return fmt.Errorf("catalog: create station %q: no secret hash", st.ID)
	}
	if st.Slots < 0 {
		return fmt.Errorf("catalog: create station %q: negative slot count", st.ID)
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = time.Now().UTC()
	}
	v, err := json.Marshal(stationEntry{Name: st.Name, Slots: st.Slots, Lat: st.Lat, Lon: st.Lon, CreatedAt: st.CreatedAt, SecretHash: hexHash(st.SecretHash)})
	if err != nil {
		return fmt.Errorf("catalog: create station %q: %w", st.ID, err)
	}
	rev, err := c.kv.Create(ctx, pStation+st.ID, v)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("catalog: station %q: %w", st.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("catalog: create station %q: %w", st.ID, err)
	}
	return c.waitApplied(ctx, rev)
}

// RotateStationSecret is store.RotateStationSecret on the catalogue.
func (c *Catalog) RotateStationSecret(ctx context.Context, id string, hash [32]byte, grace time.Duration) (time.Time, error) {
	if hash == ([32]byte{}) {
		return time.Time{}, fmt.Errorf("catalog: rotate secret of %q: no secret hash", id)
	}
	if grace < 0 {
		return time.Time{}, fmt.Errorf("catalog: rotate secret of %q: negative grace %s", id, grace)
	}
	if !wire.ValidID(id) {
		return time.Time{}, fmt.Errorf("catalog: station %q: %w", id, store.ErrNotFound)
	}
	for {
		e, err := c.kv.Get(ctx, pStation+id)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return time.Time{}, fmt.Errorf("catalog: station %q: %w", id, store.ErrNotFound)
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("catalog: rotate secret of %q: %w", id, err)
		}
		var v stationEntry
		if err := json.Unmarshal(e.Value(), &v); err != nil {
			return time.Time{}, fmt.Errorf("catalog: station %q: %w", id, err)
		}
		var until time.Time
		v.PrevHash, v.PrevUntil = "", time.Time{}
		if grace > 0 {
			until = time.Now().Add(grace).UTC()
			v.PrevHash, v.PrevUntil = v.SecretHash, until
		}
		v.SecretHash = hexHash(hash)
		nv, err := json.Marshal(v)
		if err != nil {
			return time.Time{}, err
		}
		rev, err := c.kv.Update(ctx, pStation+id, nv, e.Revision())
		if errors.Is(err, jetstream.ErrKeyExists) {
			continue // written meanwhile: read it again
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("catalog: rotate secret of %q: %w", id, err)
		}
		return until, c.waitApplied(ctx, rev)
	}
}

// DeleteStation removes the station's entry (its credentials); the
// bridge's removal commit is the caller's. ErrNotFound when it has none.
func (c *Catalog) DeleteStation(ctx context.Context, id string) error {
	if !wire.ValidID(id) {
		return fmt.Errorf("catalog: station %q: %w", id, store.ErrNotFound)
	}
	e, err := c.kv.Get(ctx, pStation+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("catalog: station %q: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("catalog: delete station %q: %w", id, err)
	}
	if err := c.kv.Delete(ctx, pStation+id, jetstream.LastRevision(e.Revision())); err != nil {
		return fmt.Errorf("catalog: delete station %q: %w", id, err)
	}
	return c.waitLatest(ctx)
}

// HasStation reports whether the bucket holds the station (not the view).
func (c *Catalog) HasStation(ctx context.Context, id string) (bool, error) {
	if !wire.ValidID(id) {
		return false, nil
	}
	_, err := c.kv.Get(ctx, pStation+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	return err == nil, err
}

// CreateUser adds u; store.ErrExists if the id or the token hash is taken.
func (c *Catalog) CreateUser(ctx context.Context, u store.User) error {
	if err := wire.CheckID("user id", u.ID); err != nil {
		return fmt.Errorf("catalog: create user: %w", err)
	}
	if u.TokenHash == ([32]byte{}) {
		return fmt.Errorf("catalog: create user %q: no token hash", u.ID)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now().UTC()
	}
	uv, _ := json.Marshal(userEntry{TokenHash: hexHash(u.TokenHash), CreatedAt: u.CreatedAt})
	if _, err := c.kv.Create(ctx, pUser+u.ID, uv); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("catalog: user %q: %w", u.ID, store.ErrExists)
		}
		return fmt.Errorf("catalog: create user %q: %w", u.ID, err)
	}
	tv, _ := json.Marshal(tokenEntry{User: u.ID, CreatedAt: u.CreatedAt})
	rev, err := c.kv.Create(ctx, pToken+hexHash(u.TokenHash), tv)
	if err != nil {
		// Undo the user: nothing else can hold it yet.
		if derr := c.kv.Delete(ctx, pUser+u.ID); derr == nil {
			_ = c.waitLatest(ctx)
		}
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("catalog: user %q: token hash in use: %w", u.ID, store.ErrExists)
		}
		return fmt.Errorf("catalog: create user %q: %w", u.ID, err)
	}
	return c.waitApplied(ctx, rev)
}

// AddUserToken is store.AddUserToken on the catalogue.
func (c *Catalog) AddUserToken(ctx context.Context, uid string, hash [32]byte) (string, error) {
	if hash == ([32]byte{}) {
		return "", fmt.Errorf("catalog: add token of %q: no token hash", uid)
	}
	if !wire.ValidID(uid) {
		return "", fmt.Errorf("catalog: user %q: %w", uid, store.ErrNotFound)
	}
	if _, err := c.kv.Get(ctx, pUser+uid); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", fmt.Errorf("catalog: user %q: %w", uid, store.ErrNotFound)
		}
		return "", fmt.Errorf("catalog: add token of %q: %w", uid, err)
	}
	tv, _ := json.Marshal(tokenEntry{User: uid, CreatedAt: time.Now().UTC()})
	rev, err := c.kv.Create(ctx, pToken+hexHash(hash), tv)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return "", fmt.Errorf("catalog: user %q: token hash in use: %w", uid, store.ErrExists)
	}
	if err != nil {
		return "", fmt.Errorf("catalog: add token of %q: %w", uid, err)
	}
	return store.TokenID(hash), c.waitApplied(ctx, rev)
}

// RevokeUserTokens removes every token of the user (as this node's view
// knows them, once it applied the catalogue as it is now) and returns how
// many there were.
func (c *Catalog) RevokeUserTokens(ctx context.Context, uid string) (int, error) {
	if !wire.ValidID(uid) {
		return 0, fmt.Errorf("catalog: user %q: %w", uid, store.ErrNotFound)
	}
	if err := c.waitLatest(ctx); err != nil {
		return 0, err
	}
	hashes, err := c.view.UserTokenHashes(uid)
	if err != nil {
		return 0, err
	}
	for _, h := range hashes {
		if err := c.kv.Delete(ctx, pToken+hexHash(h)); err != nil {
			return 0, fmt.Errorf("catalog: revoke tokens of %q: %w", uid, err)
		}
	}
	return len(hashes), c.waitLatest(ctx)
}

// DeleteUser removes the user and its tokens.
func (c *Catalog) DeleteUser(ctx context.Context, uid string) error {
	if err := wire.CheckID("user id", uid); err != nil {
		return fmt.Errorf("catalog: delete user: %w", err)
	}
	if _, err := c.kv.Get(ctx, pUser+uid); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("catalog: user %q: %w", uid, store.ErrNotFound)
		}
		return fmt.Errorf("catalog: delete user %q: %w", uid, err)
	}
	if _, err := c.RevokeUserTokens(ctx, uid); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err := c.kv.Delete(ctx, pUser+uid); err != nil {
		return fmt.Errorf("catalog: delete user %q: %w", uid, err)
	}
	return c.waitLatest(ctx)
}
