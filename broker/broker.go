package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/wire"
)

// Errors returned by the broker.
var (
	// ErrClosed is returned by Start and SendToStation after Close.
	ErrClosed = errors.New("broker: closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("broker: already started")
	// ErrPayloadTooLarge is returned by SendToStation for a payload over
	// wire.MaxPayload.
	ErrPayloadTooLarge = errors.New("broker: payload larger than 64 KiB")
)

// Defaults applied to zero fields of Config.
const (
	DefaultMaxPacketSize    = wire.MaxPayload + 1024
	DefaultMaxClients       = 10000
	DefaultReceiveMaximum   = 64
	DefaultMaxInflight      = 1024
	DefaultMaxPendingWrites = 64
	DefaultSessionExpiry    = time.Hour
	DefaultMessageExpiry    = time.Hour
	DefaultMaxKeepalive     = 5 * time.Minute
	DefaultConnectTimeout   = 10 * time.Second
	DefaultNegativeCacheTTL = 5 * time.Second
	DefaultWriteTimeout     = 10 * time.Second
)

// closeGrace is how long Close lets clients take their last packets (MQTT
// 5: DISCONNECT "server shutting down") before their sockets are closed
// whatever they do.
const closeGrace = time.Second

// Config configures a Broker. Zero values mean the documented default.
type Config struct {
	// Addr is the TCP listener address, e.g. ":1883" or "127.0.0.1:0".
	// "" disables the plain TCP listener.
	Addr string
	// TLSAddr is the TLS listener address; "" disables it. CertFile and
	// KeyFile (PEM) are required when it is set.
	TLSAddr, CertFile, KeyFile string

	// MaxPacketSize bounds every MQTT packet a client sends, in bytes.
	// 0 → DefaultMaxPacketSize (the contract's 64 KiB payload plus room for
	// the topic and properties). Payloads over 64 KiB are refused in any case.
	MaxPacketSize int
	// MaxClients bounds concurrent connections. 0 → DefaultMaxClients.
	MaxClients int
	// ReceiveMaximum bounds unacknowledged QoS 1/2 publishes from one client.
	// 0 → DefaultReceiveMaximum.
	ReceiveMaximum int
	// MaxInflight bounds QoS 1/2 messages held for one client awaiting its
	// acknowledgement (also while it is offline). 0 → DefaultMaxInflight.
	MaxInflight int
	// MaxPendingWrites bounds the outbound queue of one client; messages
	// beyond it are dropped. 0 → DefaultMaxPendingWrites (64). A station
	// receives only commands, a handful at a time, and a dropped command
	// is resent by the bridge's retry; the queue is allocated up front for
	// every connection (8 bytes per slot).
	MaxPendingWrites int
	// SessionExpiry caps how long a disconnected persistent session (its
	// subscription and queued commands) is kept. 0 → DefaultSessionExpiry.
	SessionExpiry time.Duration
	// MessageExpiry caps how long a queued or retained message lives.
	// 0 → DefaultMessageExpiry.
	MessageExpiry time.Duration
	// MaxKeepalive caps the keepalive a client may ask for; a client asking
	// for none (0) or more gets this one (MQTT 5 clients are told so in the
	// CONNACK). A connection silent for 1.5× its keepalive is closed.
	// 0 → DefaultMaxKeepalive.
	MaxKeepalive time.Duration
	// ConnectTimeout is how long a new connection may take to complete its
	// TLS handshake and send CONNECT. 0 → DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// NegativeCacheTTL is how long an unknown station id is remembered, so
	// that a storm of connects with unknown ids does not reach the store.
	// 0 → DefaultNegativeCacheTTL; negative disables the negative cache.
	NegativeCacheTTL time.Duration
	// AuthFailures is how many failed CONNECTs one remote address may make
	// for one client id within AuthFailWindow: each failure is answered
	// AuthDelay × (failures so far) late (at most 1s), and the
	// AuthFailures-th blocks that client id from that address for
	// AuthBlock: every CONNECT of it from there is refused at once (reason
	// too_many_failures), whatever its credentials. Other client ids from
	// the same address (stations behind one NAT or load balancer) are not
	// affected. Zero values mean DefaultAuthFailures, DefaultAuthFailWindow,
	// DefaultAuthBlock and DefaultAuthDelay; a negative AuthFailures turns
	// the limit off, a negative AuthDelay the slowdown.
	AuthFailures              int
	AuthFailWindow, AuthBlock time.Duration
	AuthDelay                 time.Duration
	// AuthHostFailures is how many failed CONNECTs one remote address may
	// make within AuthFailWindow, whatever the client ids (against
	// spraying many ids): past it, for AuthBlock, every failed CONNECT
	// from the address is answered 1s late. A CONNECT with correct
	// credentials is never refused or slowed for it. 0 →
	// DefaultAuthHostFailures (100); negative: off. Off too when
	// AuthFailures is negative.
	AuthHostFailures int
	// PublishRate bounds each station's publishes per second, PublishBurst
	// how many it may send at once; MQTT 5 publishes refused by the ACL
	// count too. A publish over the rate waits for its turn (slowing the
	// station down: its connection is not read meanwhile). A connection's
	// publishes are read one at a time, so one waits at most 1/PublishRate;
	// PublishWait only matters for rates under 1/PublishWait: a publish
	// that would wait longer than it closes the connection without PUBACK
	// (MQTT 5: DISCONNECT 0x96), and the station resends after
	// reconnecting. Zero values mean DefaultPublishRate, DefaultPublishBurst
	// and DefaultPublishWait; a negative PublishRate turns the limit off.
	PublishRate  float64
	PublishBurst int
	PublishWait  time.Duration
	// PipelineDepth is how many QoS 1 publishes of one connection may be
	// in the Handler at once: the connection is read on while earlier
	// publishes are committed, and their PUBACKs are written in order as
	// each is done. A connection with this many unacknowledged publishes
	// is not read until the oldest is done. 0 → ReceiveMaximum; negative
	// → 1 (each publish acknowledged before the next is read).
	PipelineDepth int

	// NotFound is the error (matched with errors.Is) the Credentials return
	// for an unknown station, e.g. store.ErrNotFound. Other errors refuse the
	// connect with reason "store_error" and are not cached. nil: every error
	// counts as an unknown station.
	NotFound error

	// WriteTimeout bounds every write to a client: a client that does not
	// read what the broker sends it for this long is disconnected. 0 →
	// DefaultWriteTimeout (10s); at most MaxKeepalive.
	WriteTimeout time.Duration

	// Registerer receives the broker's metrics; nil: no metrics are exported.
	Registerer prometheus.Registerer
	// Logger receives the broker's logs; nil: discarded.
	Logger *slog.Logger
}

// Credentials is what the auth hook loads station secret hashes from
// (store.Store satisfies it). StationSecretHash returns the SHA-256 of the
// station's secret.
type Credentials interface {
	StationSecretHash(sid string) ([32]byte, error)
}

// Handler receives station publishes that passed auth and ACL. It is
// implemented by the bridge.
type Handler interface {
	// HandlePublish is called on the publishing client's goroutine, one
	// message of a connection at a time, in the order received, BEFORE the
	// PUBACK is sent; it must not wait for the message to be durable. A
	// returned error wrapping wire.ErrBadPayload means the message can
	// never be applied: it is acknowledged (MQTT 5 QoS 1: PUBACK 0x99),
	// dropped and counted, and the connection stays up, so one malformed
	// message cannot wedge a station that would resend it forever. Any
	// other returned error means: do not acknowledge, drop the packet, and
	// disconnect the client, so that it resends after reconnecting; done is
	// then never called. Otherwise done is called exactly once (possibly
	// before HandlePublish returns, possibly on another goroutine; it does
	// not block): nil when the message may be acknowledged, or an error for
	// which neither it nor any later publish of the connection may be (the
	// connection is closed). kind is status, telemetry or ack. payload must
	// not be modified; it may be kept.
	HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error
	// StationConnected / StationDisconnected report a station's MQTT session
	// going up / down. Must not block.
	StationConnected(sid string)
	StationDisconnected(sid string)
}

// Broker is the embedded MQTT broker. Create it with New.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	srv     *mqtt.Server
	creds   *credCache
	m       *metrics
	handler Handler // set before Start, read-only afterwards

	tcp, tls *listener

	// stripes serialise, per station, the reporting of its sessions going
	// up and down and of its Will; taken before mu.
	stripes [64]sync.Mutex

	mu       sync.Mutex
	sessions map[string]*mqtt.Client // live connection per station; guarded by mu
	logins   logins                  // the secret each live session logged in with (revoke.go)

	stateMu sync.Mutex
	started bool
	closed  bool

	auth *authLimiter  // nil: no login limit
	pubs *pubLimiter   // nil: no publish rate limit
	quit chan struct{} // closed by Close; ends limiter waits

	closing   atomic.Bool
	closeOnce sync.Once

	// bg counts the goroutines started by goBackground (PUBACK flushes and
	// disconnects ordered from a commit's outcome); Close waits for them.
	bgMu     sync.Mutex
	bgClosed bool
	bg       sync.WaitGroup
}

// New validates cfg and builds a broker backed by creds. Nothing is bound
// until Start.
func New(cfg Config, creds Credentials) (*Broker, error) {
	if creds == nil {
		return nil, errors.New("broker: no credentials source")
	}
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	var base slog.Handler = slog.DiscardHandler
	if cfg.Logger != nil {
		base = cfg.Logger.Handler()
	}
	// One limit of warnings per client for the broker's lines and mochi's.
	lim := newLogLimiter()
	log := slog.New(newLogHandler(base, false, lim))
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}

	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = int64(cfg.MaxClients)
	caps.MaximumPacketSize = uint32(cfg.MaxPacketSize)
	caps.ReceiveMaximum = uint16(cfg.ReceiveMaximum)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	caps.MaximumClientWritesPending = int32(cfg.MaxPendingWrites)
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumMessageExpiryInterval = int64(cfg.MessageExpiry / time.Second)
	caps.TopicAliasMaximum = 0 // stations use three topics; no alias tables to bound
	// An ack carries no user properties of the packet it acknowledges: a
	// client could have them written back to it (60 KiB per ack) and stop
	// reading.
	caps.Compatibilities.NoInheritedPropertiesOnAck = true

	b := &Broker{
		cfg:      cfg,
		log:      log,
		m:        m,
		creds:    newCredCache(creds, cfg.NotFound, cfg.NegativeCacheTTL),
		sessions: make(map[string]*mqtt.Client),
		auth:     newAuthLimiter(cfg.AuthFailures, cfg.AuthHostFailures, cfg.AuthFailWindow, cfg.AuthBlock, cfg.AuthDelay),
		pubs:     newPubLimiter(cfg.PublishRate, cfg.PublishBurst, cfg.PublishWait),
		quit:     make(chan struct{}),
	}
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities: caps,
		InlineClient: true,
		// mochi's per-connection read buffer (2 KiB by default) is held
		// for the connection's life; 1 KiB holds a few partial telemetry
		// messages, and larger packets are read past it directly.
		ClientNetReadBufferSize: 1024,
		// mochi logs whole packets (passwords and payloads included) and
		// a line per bad packet; logHandler keeps neither.
		Logger:                 slog.New(newLogHandler(base, true, lim)).With("component", "mqtt"),
		SysTopicResendInterval: 60, // nobody may read $SYS; keep its ticker slow
	})
	if err := b.srv.AddHook(&hook{b: b}, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	return b, nil
}

func (c *Config) fill() error {
	def := func(v *int, d int, name string, max int) error {
		if *v == 0 {
			*v = d
		}
		if *v < 0 || *v > max {
			return fmt.Errorf("broker: %s %d out of range 1..%d", name, *v, max)
		}
		return nil
	}
	if err := def(&c.MaxPacketSize, DefaultMaxPacketSize, "max packet size", math.MaxInt32); err != nil {
		return err
	}
	if c.MaxPacketSize < 1024 {
		return fmt.Errorf("broker: max packet size %d below 1024", c.MaxPacketSize)
	}
	if err := def(&c.MaxClients, DefaultMaxClients, "max clients", math.MaxInt32); err != nil {
		return err
	}
	if err := def(&c.ReceiveMaximum, DefaultReceiveMaximum, "receive maximum", math.MaxUint16); err != nil {
		return err
	}
	if c.PipelineDepth == 0 {
		c.PipelineDepth = c.ReceiveMaximum
	}
	if c.PipelineDepth < 0 {
		c.PipelineDepth = 1
	}
	if err := def(&c.MaxInflight, DefaultMaxInflight, "max inflight", math.MaxUint16); err != nil {
		return err
	}
	if err := def(&c.MaxPendingWrites, DefaultMaxPendingWrites, "max pending writes", math.MaxInt32); err != nil {
		return err
	}
	dur := func(v *time.Duration, d time.Duration, name string, max time.Duration) error {
		if *v == 0 {
			*v = d
		}
		if *v < time.Second || *v > max {
			return fmt.Errorf("broker: %s %s out of range 1s..%s", name, *v, max)
		}
		return nil
	}
	if err := dur(&c.SessionExpiry, DefaultSessionExpiry, "session expiry", 365*24*time.Hour); err != nil {
		return err
	}
	if err := dur(&c.MessageExpiry, DefaultMessageExpiry, "message expiry", 365*24*time.Hour); err != nil {
		return err
	}
	if err := dur(&c.MaxKeepalive, DefaultMaxKeepalive, "max keepalive", math.MaxUint16*time.Second); err != nil {
		return err
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	if c.ConnectTimeout < 0 {
		return fmt.Errorf("broker: negative connect timeout %s", c.ConnectTimeout)
	}
	if c.NegativeCacheTTL == 0 {
		c.NegativeCacheTTL = DefaultNegativeCacheTTL
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.WriteTimeout < 0 || c.WriteTimeout > c.MaxKeepalive {
		return fmt.Errorf("broker: write timeout %s out of range 0..%s", c.WriteTimeout, c.MaxKeepalive)
	}
	if c.AuthHostFailures == 0 {
		c.AuthHostFailures = DefaultAuthHostFailures
	}
	if c.AuthFailures == 0 {
		c.AuthFailures = DefaultAuthFailures
	}
	if c.AuthFailWindow <= 0 {
		c.AuthFailWindow = DefaultAuthFailWindow
	}
	if c.AuthBlock <= 0 {
		c.AuthBlock = DefaultAuthBlock
	}
	if c.AuthDelay == 0 {
		c.AuthDelay = DefaultAuthDelay
	}
	if c.PublishRate == 0 {
		c.PublishRate = DefaultPublishRate
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = DefaultPublishBurst
	}
	if c.PublishWait <= 0 {
		c.PublishWait = DefaultPublishWait
	}
	if c.TLSAddr != "" && (c.CertFile == "" || c.KeyFile == "") {
		return errors.New("broker: TLS listener needs a certificate file and a key file")
	}
	return nil
}

// SetHandler sets the receiver of station publishes and session events. Call
// it before Start; calls after Start are ignored. Without a handler,
// permitted publishes are accepted and only delivered as plain MQTT.
func (b *Broker) SetHandler(h Handler) {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if !b.started {
		b.handler = h
	}
}

// goBackground runs f on a goroutine that Close waits for; once Close has
// begun waiting it runs nothing and returns false.
func (b *Broker) goBackground(f func()) bool {
	b.bgMu.Lock()
	defer b.bgMu.Unlock()
	if b.bgClosed {
		return false
	}
	b.bg.Go(f)
	return true
}

// Start binds the listeners and serves connections in the background. It
// returns a clear error when an address cannot be bound (e.g. the port is
// taken) or the certificate cannot be loaded; nothing stays bound then.
func (b *Broker) Start() error {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	switch {
	case b.closed:
		return ErrClosed
	case b.started:
		return ErrStarted
	}

	var tlsCfg *tls.Config
	if b.cfg.TLSAddr != "" {
		cert, err := tls.LoadX509KeyPair(b.cfg.CertFile, b.cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("broker: load TLS certificate %s / key %s: %w", b.cfg.CertFile, b.cfg.KeyFile, err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}

	var ls []*listener
	closeAll := func() {
		for _, l := range ls {
			l.closeSocket()
		}
	}
	if b.cfg.Addr != "" {
		l, err := listen("tcp", b.cfg.Addr, nil, b)
		if err != nil {
			return err
		}
		b.tcp = l
		ls = append(ls, l)
	}
	if b.cfg.TLSAddr != "" {
		l, err := listen("tls", b.cfg.TLSAddr, tlsCfg, b)
		if err != nil {
			closeAll()
			return err
		}
		b.tls = l
		ls = append(ls, l)
	}
	for _, l := range ls {
		if err := b.srv.AddListener(l); err != nil {
			closeAll()
			return fmt.Errorf("broker: add listener %s: %w", l.id, err)
		}
	}
	if err := b.srv.Serve(); err != nil {
		closeAll()
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.started = true
	b.log.Info("mqtt broker started", "addr", b.Addr(), "tls_addr", b.TLSAddr())
	return nil
}

// Addr returns the bound TCP address (useful with port 0), or "" when the
// TCP listener is disabled or not started. Call it after Start returned.
func (b *Broker) Addr() string {
	if b.tcp == nil {
		return ""
	}
	return b.tcp.Address()
}

// TLSAddr returns the bound TLS address, or "".
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// SendToStation publishes payload to swap/v1/stations/{sid}/cmd at QoS 1,
// not retained, through the inline client. It does not wait for delivery:
// the message is queued for the station's connection, or for its persistent
// session while it is offline (until the message expiry), or dropped if the
// station has neither; the station's ack is the only delivery receipt.
// payload must not be modified afterwards.
func (b *Broker) SendToStation(sid string, payload []byte) error {
	if b.closing.Load() {
		return ErrClosed
	}
	if err := wire.CheckID("station id", sid); err != nil {
		return fmt.Errorf("broker: send to station: %w", err)
	}
	if len(payload) > wire.MaxPayload {
		return ErrPayloadTooLarge
	}
	if err := b.srv.Publish(wire.Topic(sid, wire.KindCmd), payload, false, 1); err != nil {
		return fmt.Errorf("broker: send to station %s: %w", sid, err)
	}
	return nil
}

// Invalidate drops the cached credential of sid (call it after
// provisioning). Connections already established are not affected; after a
// rotation or a deletion call Revoke.
func (b *Broker) Invalidate(sid string) { b.creds.invalidate(sid) }

// Connected reports whether sid has a live MQTT connection.
func (b *Broker) Connected(sid string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.sessions[sid]
	return ok
}

// Close stops the listeners, disconnects every client and waits until all
// connection goroutines (and Handler calls) have returned. It is idempotent.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closing.Store(true)
		close(b.quit) // hooks waiting in a limiter return at once
		b.stateMu.Lock()
		b.closed = true
		b.stateMu.Unlock()
		// Server.Close closes each listener (ours wait for their
		// connection goroutines) and then waits for every client.
		_ = b.srv.Close()
		// Every connection is closed now, so a PUBACK flush still running
		// fails its write at once.
		b.bgMu.Lock()
		b.bgClosed = true
		b.bgMu.Unlock()
		b.bg.Wait()
		b.logins.stop()
		b.mu.Lock()
		clear(b.sessions)
		b.m.connected.Set(0)
		b.mu.Unlock()
	})
	return nil
}

// pause waits d, or less when the broker is closing.
func (b *Broker) pause(d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-b.quit:
	}
}

// stripe returns the lock that serialises sid's session reports.
func (b *Broker) stripe(sid string) *sync.Mutex {
	var h uint32 = 2166136261 // FNV-1a
	for i := 0; i < len(sid); i++ {
		h = (h ^ uint32(sid[i])) * 16777619
	}
	return &b.stripes[h%uint32(len(b.stripes))]
}

// dropClient closes cl's connection without acknowledging the packet being
// processed. MQTT 5 clients get a DISCONNECT with code first; MQTT 3.1.1 has
// no server DISCONNECT, so the connection is just closed.
func (b *Broker) dropClient(cl *mqtt.Client, code packets.Code) {
	if cl.Properties.ProtocolVersion == 5 {
		_ = b.srv.DisconnectClient(cl, code)
		return
	}
	cl.Stop(code)
}
