// Package natsnode runs the NATS server node that a swapd in embedded
// cluster mode carries: a JetStream-enabled nats-server (the pinned
// github.com/nats-io/nats-server/v2 module) with a cluster (route)
// listener and routes to the other swapd nodes, configured the way
// swapbridge's durability promise needs it: every JetStream write is
// fsync'ed before it is acknowledged (sync_interval: always), so a PUBACK
// given after a quorum acknowledged the write means "on the disk of a
// majority", not "in the page cache of a majority".
//
// Start blocks until the node accepts client connections (or fails);
// Shutdown stops it and waits. Nothing of the node runs after Shutdown
// returns.
package natsnode

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultClusterName is the NATS cluster name swapd nodes use.
const DefaultClusterName = "swapbridge"

// Config configures one node. Zero values mean the documented default.
type Config struct {
	// Name is the node's unique name in the cluster (swapd's --node-id);
	// required.
	Name string
	// StoreDir is where JetStream keeps its streams; required.
	StoreDir string
	// ClientAddr is the NATS client listener, host:port. "" means
	// 127.0.0.1 on a free port: swapd itself is the only client of an
	// embedded node.
	ClientAddr string
	// ClusterAddr is the route listener other nodes connect to, host:port
	// (swapd's --cluster-addr); required for a cluster of more than one
	// node. A port of 0 picks a free one (see Node.ClusterAddr).
	ClusterAddr string
	// Peers are the route addresses (host:port) of the cluster's nodes
	// (swapd's --cluster-peers); this node's own address may be among
	// them. Empty: a one-node JetStream (no routes).
	Peers []string
	// ClusterName names the NATS cluster; "" means DefaultClusterName.
	ClusterName string
	// ReadyTimeout bounds Start's wait for the node to accept clients;
	// 0 means 10 s.
	ReadyTimeout time.Duration
	// Logger receives the node's log at the level of its records (NATS
	// notices are info, warnings warn, errors error, debug and trace
	// debug); nil discards it.
	Logger *slog.Logger
}

// Node is a running NATS server node.
type Node struct {
	srv *server.Server
	cfg Config
}

// Start validates cfg, starts the node and waits until it accepts client
// connections.
func Start(cfg Config) (*Node, error) {
	opts, err := options(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsnode: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srv.SetLoggerV2(natsLogger{log.With("part", "nats")}, true, true, false)
	srv.Start()
	wait := cfg.ReadyTimeout
	if wait == 0 {
		wait = 10 * time.Second
	}
	if !srv.ReadyForConnections(wait) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("natsnode: node %s not ready within %s (are the client and cluster addresses free?)", cfg.Name, wait)
	}
	return &Node{srv: srv, cfg: cfg}, nil
}

// options turns cfg into nats-server options.
func options(cfg Config) (*server.Options, error) {
	if cfg.Name == "" {
		return nil, errors.New("natsnode: a node name is required")
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("natsnode: a JetStream store dir is required")
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		// Every write is fsync'ed before JetStream acknowledges it. The
		// default (a sync every 2 minutes) loses acknowledged writes on
		// power loss or an OS crash of a majority.
		SyncAlways: true,
		// swapd handles signals itself; the node must not.
		NoSigs: true,
		// A commit group of a large station (state, bookings, up to 4,096
		// events) fits in one message.
		MaxPayload: 8 << 20,
	}
	host, port, err := splitHostPort(cfg.ClientAddr, "127.0.0.1", -1)
	if err != nil {
		return nil, fmt.Errorf("natsnode: client address: %w", err)
	}
	opts.Host, opts.Port = host, port
	if cfg.ClusterAddr != "" || len(cfg.Peers) > 0 {
		if cfg.ClusterAddr == "" {
			return nil, errors.New("natsnode: peers are set but no cluster address")
		}
		host, port, err := splitHostPort(cfg.ClusterAddr, "", -1)
		if err != nil {
			return nil, fmt.Errorf("natsnode: cluster address: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = DefaultClusterName
		}
		for _, p := range cfg.Peers {
			if _, _, err := net.SplitHostPort(p); err != nil {
				return nil, fmt.Errorf("natsnode: peer %q: %w", p, err)
			}
			opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats-route", Host: p})
		}
	}
	return opts, nil
}

// splitHostPort parses host:port; an empty addr gives defHost and defPort,
// a port of 0 gives -1 (nats-server's "pick a free port").
func splitHostPort(addr, defHost string, defPort int) (string, int, error) {
	if addr == "" {
		return defHost, defPort, nil
	}
	host, ps, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	if port == 0 {
		port = -1
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// ClientURL is the URL a NATS client of this process connects with.
func (n *Node) ClientURL() string { return n.srv.ClientURL() }

// ClusterAddr is the bound route listener address, or "" without one.
func (n *Node) ClusterAddr() string {
	if a := n.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Name is the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Server is the underlying nats-server, for readiness and monitoring
// (JetStreamIsCurrent, Varz and the like).
func (n *Node) Server() *server.Server { return n.srv }

// Shutdown stops the node and waits until it has stopped. Idempotent.
func (n *Node) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// natsLogger adapts nats-server's logger to slog.
type natsLogger struct{ log *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.log.Info(clean(format, v)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(clean(format, v)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.log.Error(clean(format, v)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.log.Error(clean(format, v)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.log.Debug(clean(format, v)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.log.Debug(clean(format, v)) }

func clean(format string, v []any) string {
	return strings.TrimSpace(fmt.Sprintf(format, v...))
}
