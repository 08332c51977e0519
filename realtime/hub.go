package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

type subs map[*client]struct{}

// Hub owns every WebSocket connection: it serves the upgrade, writes each
// connection's hello and resume, fans committed events out to the
// subscribers of their channels, and closes everything on Shutdown.
type Hub struct {
	cfg      Config
	hist     History
	st       Stations
	auth     Authenticator
	log      *slog.Logger
	origins  originPolicy
	upgrader websocket.Upgrader
	readPool sync.Pool
	m        *metrics
	wg       sync.WaitGroup // handshakes, readers, writers
	bursts   atomic.Uint64  // shard deliveries so far (fanout.go)
	// revocations counts DisconnectUser calls (revoke.go).
	revocations atomic.Uint64

	// The fan-out (fanout.go): the shards, Publish's routing scratch
	// (under pubMu), and the shards' stop signal and wait.
	shards   []*shard
	pubMu    sync.Mutex
	route    [][]delivery
	stopped  atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	shardWG  sync.WaitGroup

	// mu guards the connection bookkeeping; it is not taken by Publish.
	mu      sync.RWMutex
	closed  bool
	clients subs
	perIP   map[string]int
	perUser map[string]int
}

// NewHub checks cfg, fills its defaults and registers the metrics on
// cfg.Registerer. h, st and auth must not be nil.
func NewHub(cfg Config, h History, st Stations, auth Authenticator) (*Hub, error) {
	if h == nil || st == nil || auth == nil {
		return nil, errors.New("realtime: NewHub needs a History, Stations and an Authenticator")
	}
	cfg.setDefaults()
	origins, err := newOriginPolicy(cfg.AllowedOrigins)
	if err != nil {
		return nil, err
	}
	hub := &Hub{
		cfg:     cfg,
		hist:    h,
		st:      st,
		auth:    auth,
		log:     cfg.Logger,
		origins: origins,
		stop:    make(chan struct{}),
		clients: make(subs),
		perIP:   make(map[string]int),
		perUser: make(map[string]int),
	}
	if hub.m, err = newMetrics(cfg.Registerer, hub.fanoutQueued); err != nil {
		return nil, err
	}
	hub.startShards()
	size := cfg.ReadLimit + 1
	hub.readPool.New = func() any { b := make([]byte, size); return &b }
	hub.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.WriteTimeout,
		// gorilla's buffers: a small read buffer (it is held for the
		// connection's life) and a write pool that is never drawn from,
		// because the hub frames its own writes.
		ReadBufferSize:  256,
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     hub.origins.allowed,
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			writeHTTPError(w, status, "upgrade_failed", reason.Error())
		},
	}
	return hub, nil
}

// fanoutQueued returns how many deliveries wait in the shards' queues.
func (h *Hub) fanoutQueued() float64 {
	n := 0
	for _, s := range h.shards {
		n += s.depth()
	}
	return float64(n)
}

// Register adds the WebSocket endpoints to mux: GET /ws/stations/,
// /ws/stations/{sid}/ and /ws/notifications/ (each also without its
// trailing slash).
func (h *Hub) Register(mux *http.ServeMux) {
	for _, p := range []string{StationsPath, NotificationsPath} {
		mux.Handle("GET "+p, h)
		mux.Handle("GET "+strings.TrimSuffix(p, "/"), h)
	}
}

// Shutdown closes every connection with 1001 (going away), refuses new ones
// with 503, and waits until every connection's goroutines have ended. When
// ctx ends first it closes the remaining sockets at once, waits for their
// goroutines, and returns ctx.Err(). It is idempotent. Publish does
// nothing once Shutdown has begun.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.stopped.Store(true)
	h.stopOnce.Do(func() { close(h.stop) })
	defer h.shardWG.Wait()
	h.mu.Lock()
	h.closed = true
	open := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		open = append(open, c)
	}
	h.mu.Unlock()
	for _, c := range open {
		c.close(websocket.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	h.mu.RLock()
	for c := range h.clients {
		_ = c.conn.Close()
	}
	h.mu.RUnlock()
	<-done
	return ctx.Err()
}

// DisconnectAll closes every open WebSocket with code and reason (for
// example 1012, service restart, before maintenance) and returns how many
// it closed. Unlike Shutdown, the hub keeps accepting connections, so
// clients reconnect and resume with since. It does not block on clients.
func (h *Hub) DisconnectAll(code int, reason string) int {
	h.mu.RLock()
	open := make([]*client, 0, len(h.clients))
	for c := range h.clients {
		open = append(open, c)
	}
	h.mu.RUnlock()
	n := 0
	for _, c := range open {
		if c.open() {
			c.close(code, reason)
			n++
		}
	}
	return n
}

// admit reserves a connection slot for ip and uid ("" for none), or returns
// the HTTP status and error code of the refusal.
func (h *Hub) admit(ip, uid string) (int, string, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return http.StatusServiceUnavailable, "shutting_down", "the server is shutting down"
	}
	if n := h.cfg.MaxConnsPerIP; n > 0 && h.perIP[ip] >= n {
		return http.StatusTooManyRequests, "too_many_connections", fmt.Sprintf("at most %d WebSocket connections per client address", n)
	}
	if n := h.cfg.MaxConnsPerUser; uid != "" && n > 0 && h.perUser[uid] >= n {
		return http.StatusTooManyRequests, "too_many_connections", fmt.Sprintf("at most %d WebSocket connections per user", n)
	}
	h.perIP[ip]++
	if uid != "" {
		h.perUser[uid]++
	}
	return 0, "", ""
}

func (h *Hub) releaseLocked(ip, uid string) {
	if h.perIP[ip]--; h.perIP[ip] <= 0 {
		delete(h.perIP, ip)
	}
	if uid != "" {
		if h.perUser[uid]--; h.perUser[uid] <= 0 {
			delete(h.perUser, uid)
		}
	}
}

func (h *Hub) release(ip, uid string) {
	h.mu.Lock()
	h.releaseLocked(ip, uid)
	h.mu.Unlock()
}

// subscribe adds c to its channel's shard, so that the events the shard
// delivers from now on are queued for it. It fails when the hub is shut down. It counts the handshake in wg.
func (h *Hub) subscribe(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.wg.Add(1)
	h.clients[c] = struct{}{}
	h.shardOf(keyOf(c.ch)).add(c)
	h.m.conns(c.ch.Kind).Inc()
	return true
}

// unregister removes c from the hub and releases its limits. It is called
// once per subscribed client.
func (h *Hub) unregister(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	h.shardOf(keyOf(c.ch)).remove(c)
	h.releaseLocked(c.ip, c.uid)
	h.m.conns(c.ch.Kind).Dec()
}

// ServeHTTP serves the WebSocket endpoints (see Register). Everything that
// can be refused is refused before the upgrade, with a JSON error body.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ch, err := parsePath(r.URL.Path)
	switch {
	case errors.Is(err, wire.ErrInvalidID):
		h.refuse(w, r, http.StatusNotFound, "station_not_found", err.Error())
		return
	case err != nil:
		h.refuse(w, r, http.StatusNotFound, "not_found", "no WebSocket endpoint at "+r.URL.Path)
		return
	case ch.Kind == store.OneStation && !h.st.StationExists(ch.ID):
		h.refuse(w, r, http.StatusNotFound, "station_not_found", "no station "+ch.ID)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		h.refuse(w, r, http.StatusUpgradeRequired, "websocket_required", "this endpoint speaks WebSocket only")
		return
	}
	if !h.origins.allowed(r) {
		h.refuse(w, r, http.StatusForbidden, "origin_not_allowed", "origin "+r.Header.Get("Origin")+" is not allowed")
		return
	}
	uid := ""
	gen := h.revocations.Load()
	if ch.Kind == store.OneUser || h.cfg.RequireStationToken {
		tok := tokenFrom(r)
		if tok == "" {
			h.refuse(w, r, http.StatusUnauthorized, "unauthorized", "a user token is required (Authorization: Bearer or ?token=)")
			return
		}
		if uid, err = h.auth.UserForToken(tok); err != nil || !wire.ValidID(uid) {
			if h.cfg.AuthFailed != nil {
				h.cfg.AuthFailed(r)
			}
			h.refuse(w, r, http.StatusUnauthorized, "unauthorized", "the token is not valid")
			return
		}
		if ch.Kind == store.OneUser {
			ch.ID = uid
		}
	}
	since, resume, err := parseSince(r.URL.Query())
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, "bad_since", err.Error())
		return
	}
	ip := h.cfg.ClientIP(r)
	if status, code, msg := h.admit(ip, uid); status != 0 {
		h.refuse(w, r, status, code, msg)
		return
	}
	ws, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		h.release(ip, uid)
		h.log.Debug("ws upgrade failed", "ip", ip, "err", err)
		return
	}
	c := &client{hub: h, ch: ch, ip: ip, uid: uid, conn: ws.NetConn(), ws: ws, readerDone: make(chan struct{})}
	if !h.subscribe(c) {
		h.release(ip, uid)
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		_ = c.conn.Close()
		return
	}
	defer h.wg.Done()
	if h.recheck(c, r, gen) {
		c.abandon(websocket.ClosePolicyViolation, "token revoked")
		h.goLive(c, 0)
	} else if err := h.handshake(c, since, resume); err != nil {
		h.log.Debug("ws handshake failed", "channel", channelName(ch), "ip", ip, "err", err)
		c.abort()
		h.unregister(c)
		return
	}
	h.wg.Add(1)
	go c.readLoop()
}

func (h *Hub) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string) {
	h.m.rejected.WithLabelValues(code).Inc()
	h.log.Debug("ws refused", "path", r.URL.Path, "status", status, "code", code)
	writeHTTPError(w, status, code, msg)
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(wire.ErrorBody{Error: wire.ErrorDetail{Code: code, Message: msg}})
}

// handshake writes the hello and then either the missed events (resume) or
// the snapshot, and hands the connection over to the writer. Live events
// its shard delivers meanwhile wait in the queue (the client subscribed
// before the log was read, so an event is in the log read or delivered
// after) and are sent after, from the first seq not yet sent; one the shard
// delivers after the log read already returned it is skipped: no gap, no
// duplicate.
func (h *Hub) handshake(c *client, since uint64, resume bool) error {
	last := h.hist.LastSeq()
	recovered := false
	var page []store.Event
	if resume && since <= last && h.replayAllowed(c.ch, since, last) {
		evs, err := h.hist.EventsAfter(c.ch, since, h.cfg.ReplayPage)
		switch {
		case err == nil:
			recovered, page = true, evs
		case !errors.Is(err, store.ErrCompacted):
			h.log.Warn("ws history read failed", "channel", channelName(c.ch), "err", err)
			c.abandon(websocket.CloseInternalServerErr, "event log unavailable; retry later")
			h.goLive(c, last)
			return nil
		}
	}
	if resume {
		h.m.resumes.WithLabelValues(fmt.Sprint(recovered)).Inc()
	}
	now := time.Now().UTC()
	hello, _ := json.Marshal(wire.Hello{Type: wire.TypeHello, TS: now, Channel: channelName(c.ch), Seq: last, Recovered: recovered})
	b := getBatch()
	defer putBatch(b)
	b.text(hello)
	sent := last
	if recovered {
		sent = since
		for {
			for i := range page {
				b.text(page[i].Data)
				sent = page[i].Seq
			}
			if err := h.writeDirect(c, b); err != nil {
				return err
			}
			if len(page) < h.cfg.ReplayPage || !c.open() {
				break // done, or closed meanwhile (slow consumer, shutdown)
			}
			var err error
			page, err = h.hist.EventsAfter(c.ch, sent, h.cfg.ReplayPage)
			if err != nil {
				// Nothing after a gap may be sent. If retention overtook
				// the replay, the client reconnects with the seq it has and
				// gets a snapshot.
				code, reason := websocket.CloseTryAgainLater, "resume interrupted; reconnect with since"
				if !errors.Is(err, store.ErrCompacted) {
					h.log.Warn("ws history read failed", "channel", channelName(c.ch), "err", err)
					code, reason = websocket.CloseInternalServerErr, "event log unavailable; retry later"
				}
				c.abandon(code, reason)
				break
			}
		}
	} else {
		if c.ch.Kind != store.OneUser {
			snaps, err := h.st.InventorySnapshots(c.ch.ID)
			if err != nil {
				h.log.Warn("ws snapshot failed", "channel", channelName(c.ch), "err", err)
			}
			for i := range snaps {
				s := snaps[i]
				s.Snapshot = true
				fields, err := json.Marshal(s)
				if err != nil {
					continue
				}
				b.text(wire.EncodeEvent(nil, wire.TypeInventoryUpdate, last, now, fields))
			}
		}
		if err := h.writeDirect(c, b); err != nil {
			return err
		}
	}
	h.goLive(c, sent)
	return nil
}

// replayAllowed reports whether a resume of ch from since is within
// Config.MaxReplay of last (the user channel always is).
func (h *Hub) replayAllowed(ch store.Channel, since, last uint64) bool {
	if n := h.cfg.MaxReplay; n < 0 || ch.Kind == store.OneUser || last-since <= uint64(n) {
		return true
	}
	h.m.replayBounded.Inc()
	return false
}

// writeDirect writes b from the handshake goroutine (the writer is not
// running yet) and empties it.
func (h *Hub) writeDirect(c *client, b *batch) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	err := b.writeTo(c.conn)
	if err == nil {
		h.m.framesSent.Add(float64(b.n))
	}
	b.reset()
	return err
}

// goLive drops queued events the client already has (seq ≤ sent), and
// the ones its shard delivers later (an event the replay read from the log
// before the shard delivered it), starts the ping timer and the writer, and
// leaves the rest to the reader.
func (h *Hub) goLive(c *client, sent uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastSeq = max(c.lastSeq, sent)
	keep := c.queue[:0]
	c.qbytes = 0
	for _, it := range c.queue {
		if it.seq == 0 || it.seq > sent {
			keep = append(keep, it)
			c.qbytes += len(it.data)
		}
	}
	clear(c.queue[len(keep):])
	c.queue = keep
	c.started = true
	if c.state == stateOpen {
		c.pingTimer = time.AfterFunc(h.cfg.PingInterval, c.onPingTimer)
	}
	c.kickLocked()
}
