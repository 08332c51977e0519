package realtime

import (
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// History is the event log the hub replays from when a client resumes with
// ?since=. *store.Store satisfies it.
type History interface {
	// LastSeq returns the seq of the newest event (0 for an empty log).
	LastSeq() uint64
	// EventsAfter returns up to limit events of ch with seq > since, in seq
	// order, or an error wrapping store.ErrCompacted when since is out of
	// retention.
	EventsAfter(ch store.Channel, since uint64, limit int) ([]store.Event, error)
}

// Stations gives inventory snapshots and tells which stations exist. The
// bridge satisfies it.
type Stations interface {
	// InventorySnapshots returns one inventory_update (Snapshot true) per
	// station; stationID "" means every station.
	InventorySnapshots(stationID string) ([]wire.InventoryUpdate, error)
	// StationExists reports whether the station is provisioned.
	StationExists(stationID string) bool
}

// Authenticator resolves a user's bearer token to the user id. Any error
// means the token is not accepted (HTTP 401).
type Authenticator interface {
	UserForToken(token string) (userID string, err error)
}

// Config configures a Hub. The zero value is usable: every zero field takes
// the default named in its comment.
type Config struct {
	// AllowedOrigins lists the browser origins allowed to open a socket, as
	// "scheme://host[:port]"; an entry "https://*.example.com" allows every
	// subdomain of example.com over https. A request whose Origin names the
	// request's own Host is always allowed, and so is a request without an
	// Origin header (not a browser). Empty means: same origin, plus
	// localhost, 127.0.0.1 and [::1] on any port and scheme. There is no
	// "allow all".
	AllowedOrigins []string
	// RequireStationToken makes /ws/stations/ and /ws/stations/{sid}/ need a
	// valid user token too; by default they are public.
	RequireStationToken bool
	// PingInterval is how often the server sends a protocol ping; 0 means 25s.
	PingInterval time.Duration
	// PongTimeout is how long past a ping a client may stay silent (no pong,
	// no message) before it is disconnected; 0 means 10s.
	PongTimeout time.Duration
	// WriteTimeout bounds every write to a socket; a client that does not
	// take a write within it is disconnected. 0 means 10s.
	WriteTimeout time.Duration
	// QueueMessages and QueueBytes bound a connection's queue of frames not
	// yet written. They are checked when its shard delivers events (those
	// of one commit, or of several if the shard was busy): a client still
	// holding more than they allow is slow and is closed with 1013. The
	// events of one delivery are queued in full, up to 8 times the bounds,
	// so a large commit (up to store.DefaultMaxBatch updates, each with one
	// or a few events, handed over at once) never closes a client that
	// keeps up. Replies (pong, error) are checked one by one. 0 means 16384
	// messages and 8 MiB. Event frames are shared by every connection they
	// go to, so a connection's own memory is its queue array (32 bytes per
	// message); QueueBytes bounds what a stalled client keeps alive.
	QueueMessages int
	QueueBytes    int
	// MaxConnsPerUser bounds the open sockets of one user (by token);
	// MaxConnsPerIP bounds the open sockets per client IP. Over the bound the
	// upgrade is refused with 429. 0 means 32 per user and 1024 per IP;
	// negative means unlimited.
	MaxConnsPerUser int
	MaxConnsPerIP   int
	// ReadLimit is the largest client message handled; a larger one gets an
	// "error" reply (code message_too_large) and the socket stays up. A
	// message over 16 times ReadLimit (at least 64 KiB) closes the socket
	// with 1009. 0 means 4 KiB.
	ReadLimit int
	// ReplayPage is how many events one history read returns during a
	// resume; 0 means 512.
	ReplayPage int
	// MaxReplay bounds how far back a station channel's resume may start:
	// a since more than MaxReplay seqs behind the newest event is answered
	// as one outside retention (recovered:false and a snapshot), so that
	// an anonymous ?since=0 does not replay the whole retained log. The
	// distance in seqs is an upper bound of the events replayed (a
	// channel's events are among them) and costs nothing to check. The
	// user channel is not bounded: it needs a token, its sockets are
	// bounded per user, and its replay reads only the user's own events
	// through the user index. 0 means DefaultMaxReplay (10000, about 1.5
	// MB of frames); negative means unbounded.
	MaxReplay int
	// AuthFailed, when set, is called on the request's goroutine before an
	// upgrade with a wrong token is refused with 401; it may hold the
	// request back (the API's login slowdown, api.API.LoginFailed).
	AuthFailed func(r *http.Request)
	// ClientIP returns the client address used for MaxConnsPerIP; nil means
	// the host part of Request.RemoteAddr. Set it when swapd sits behind a
	// trusted proxy.
	ClientIP func(r *http.Request) string
	// Shards is how many fan-out shards the hub has: each owns the
	// channels that hash to it, with its own lock and goroutine. 0 means
	// DefaultShards.
	Shards int
	// FanoutQueue bounds the committed events (one per channel they go to)
	// waiting for one shard. A shard still holding more when a commit's
	// events arrive has fallen behind: what it holds is dropped and every
	// connection of the shard is closed with 1013, to resume from the log
	// (the committer never waits for the hub). A commit's events are
	// always taken by a shard that holds none. 0 means DefaultFanoutQueue.
	FanoutQueue int
	// Registerer receives the hub's metrics; nil means not registered.
	Registerer prometheus.Registerer
	// Logger receives connection logs; nil means discard.
	Logger *slog.Logger
}

// Defaults of Config's zero fields.
const (
	DefaultPingInterval    = 25 * time.Second
	DefaultPongTimeout     = 10 * time.Second
	DefaultWriteTimeout    = 10 * time.Second
	DefaultQueueMessages   = 16384
	DefaultQueueBytes      = 8 << 20
	DefaultMaxConnsPerUser = 32
	DefaultMaxConnsPerIP   = 1024
	DefaultReadLimit       = 4 << 10
	DefaultReplayPage      = 512
	DefaultMaxReplay       = 10000
	DefaultShards          = 16
	DefaultFanoutQueue     = 1 << 17
)

func (c *Config) setDefaults() {
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultPingInterval
	}
	if c.PongTimeout <= 0 {
		c.PongTimeout = DefaultPongTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.QueueMessages <= 0 {
		c.QueueMessages = DefaultQueueMessages
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.MaxConnsPerUser == 0 {
		c.MaxConnsPerUser = DefaultMaxConnsPerUser
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = DefaultReadLimit
	}
	if c.ReplayPage <= 0 {
		c.ReplayPage = DefaultReplayPage
	}
	if c.MaxReplay == 0 {
		c.MaxReplay = DefaultMaxReplay
	}
	if c.Shards <= 0 {
		c.Shards = DefaultShards
	}
	if c.FanoutQueue <= 0 {
		c.FanoutQueue = DefaultFanoutQueue
	}
	if c.ClientIP == nil {
		c.ClientIP = remoteHost
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// hardReadLimit is the message size at which the socket is closed (1009).
func (c *Config) hardReadLimit() int64 {
	return max(int64(c.ReadLimit)*16, 64<<10)
}

func remoteHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// The store is the hub's History.
var _ History = (*store.Store)(nil)
