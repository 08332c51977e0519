package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/swapbridge/swapbridge/api"
	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/broker"
	"github.com/swapbridge/swapbridge/realtime"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/web"
)

// Server is a running swapd.
type Server struct {
	cfg    Config
	log    *slog.Logger
	reg    *prometheus.Registry
	store  *store.Store
	broker *broker.Broker
	bridge *bridge.Bridge
	hub    *realtime.Hub
	api    *api.API
	mux    *http.ServeMux

	adminToken     string
	adminTokenPath string

	limiter  *api.IPLimiter
	httpSrv  *http.Server
	httpLn   net.Listener
	httpErr  chan error    // the Serve goroutine's result, for Run
	httpDone chan struct{} // closed when the Serve goroutine has returned

	started      atomic.Bool
	shutdownOnce sync.Once
	shutdownErr  error

	undoDataDir func() // set by New, run when Start fails (see freshDataDir)
}

// newServer opens the data dir and builds every part for New.
func newServer(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := prepareDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, reg: prometheus.NewRegistry(), mux: http.NewServeMux()}
	s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	token, path, err := adminToken(cfg, log)
	if err != nil {
		return nil, err
	}
	s.adminToken, s.adminTokenPath = token, path

	dbPath := filepath.Join(cfg.DataDir, "swapd.db")
	st, err := store.Open(dbPath, store.Options{
		Retention: store.Retention{
			MaxAge: time.Duration(cfg.Events.RetentionAge), MaxEvents: cfg.Events.RetentionEvents,
			MaxStationEvents: cfg.Events.RetentionStationEvents,
		},
		Logger:     log.With("part", "store"),
		Registerer: s.reg,
	})
	if err != nil {
		if errors.Is(err, store.ErrLocked) {
			return nil, fmt.Errorf("data dir %s is in use by another swapd (lock on %s)", cfg.DataDir, dbPath)
		}
		return nil, fmt.Errorf("open store: %w", err)
	}
	s.store = st

	fail := func(err error) (*Server, error) {
		st.Close()
		return nil, err
	}
	s.broker, err = broker.New(broker.Config{
		Addr:             cfg.MQTTAddr,
		TLSAddr:          cfg.MQTTTLS.Addr,
		CertFile:         cfg.MQTTTLS.CertFile,
		KeyFile:          cfg.MQTTTLS.KeyFile,
		MaxClients:       cfg.Limits.MQTTMaxClients,
		PublishRate:      cfg.Limits.MQTTPublishRate,
		PublishBurst:     cfg.Limits.MQTTPublishBurst,
		AuthFailures:     cfg.Limits.MQTTAuthFailures,
		AuthBlock:        time.Duration(cfg.Limits.MQTTAuthBlock),
		AuthHostFailures: cfg.Limits.MQTTAuthHostFailures,
		WriteTimeout:     time.Duration(cfg.Limits.MQTTWriteTimeout),
		PipelineDepth:    cfg.Limits.MQTTPipeline,
		NotFound:         store.ErrNotFound,
		Registerer:       s.reg,
		Logger:           log.With("part", "broker"),
	}, st)
	if err != nil {
		return fail(err)
	}
	s.bridge, err = bridge.New(bridge.Config{
		ReadySoC:          cfg.Domain.ReadySoC,
		MinSoH:            cfg.Domain.HealthFloor,
		MaxTempC:          cfg.Domain.HeatLimit,
		BookingHold:       time.Duration(cfg.Domain.BookingHold),
		SnapshotInterval:  time.Duration(cfg.Domain.SnapshotInterval),
		ChargeWait:        time.Duration(cfg.Domain.ChargeWait),
		OfflineFail:       time.Duration(cfg.Domain.OfflineFail),
		CommandRetry:      time.Duration(cfg.Domain.CommandRetry),
		CommandTimeout:    time.Duration(cfg.Domain.CommandTimeout),
		MaxActiveBookings: cfg.Domain.MaxActiveBookings,
		StationEventRate:  cfg.Events.StationRate,
		StationEventBurst: cfg.Events.StationBurst,
		Registerer:        s.reg,
		Logger:            log.With("part", "bridge"),
	}, st, s.broker)
	if err != nil {
		return fail(fmt.Errorf("bridge: %w", err))
	}
	s.broker.SetHandler(s.bridge)

	s.api, err = api.New(api.Config{
		AdminToken:  token,
		CORSOrigins: cfg.HTTP.CORSOrigins,
		Registerer:  s.reg,
		Gatherer:    s.reg,
		Ready:       s.ready,
		Logger:      log.With("part", "http"),
	}, st, s.bridge, s.broker)
	if err != nil {
		return fail(fmt.Errorf("api: %w", err))
	}
	s.hub, err = realtime.NewHub(realtime.Config{
		AllowedOrigins:      cfg.WebSocket.AllowedOrigins,
		RequireStationToken: cfg.WebSocket.RequireStationToken,
		MaxConnsPerUser:     cfg.WebSocket.MaxConnsPerUser,
		MaxConnsPerIP:       cfg.WebSocket.MaxConnsPerIP,
		MaxReplay:           cfg.WebSocket.MaxReplay,
		AuthFailed:          s.api.LoginFailed,
		Registerer:          s.reg,
		Logger:              log.With("part", "ws"),
	}, st, s.bridge, s.api)
	if err != nil {
		return fail(fmt.Errorf("websocket: %w", err))
	}
	s.limiter, err = api.NewIPLimiter(api.RateLimit{Rate: cfg.Limits.HTTPRate, Burst: cfg.Limits.HTTPBurst, Registerer: s.reg})
	if err != nil {
		return fail(fmt.Errorf("http rate limit: %w", err))
	}
	s.api.SetUserSessions(s.hub)
	st.SetCommitListener(s.hub.Publish)
	s.api.Register(s.mux)
	s.hub.Register(s.mux)
	web.Register(s.mux)
	if cfg.Pprof {
		registerPprof(s.mux, s.api.AdminOnly)
	}
	return s, nil
}

// Handle mounts an extra handler (the dashboard) on the HTTP mux. Call
// before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// Store returns the server's store.
func (s *Server) Store() *store.Store { return s.store }

// Bridge returns the server's bridge.
func (s *Server) Bridge() *bridge.Bridge { return s.bridge }

// AdminToken returns the admin token and the file it was read from or
// written to ("" when it came from the configuration).
func (s *Server) AdminToken() (token, path string) { return s.adminToken, s.adminTokenPath }

// MQTTAddr returns the bound MQTT address (after Start).
func (s *Server) MQTTAddr() string { return s.broker.Addr() }

// HTTPAddr returns the bound HTTP address (after Start).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// DisconnectWebSockets closes every WebSocket connection with close code
// 1012 (service restart) and the reason; clients reconnect and resume. It
// returns how many it closed.
func (s *Server) DisconnectWebSockets(reason string) int {
	return s.hub.DisconnectAll(websocket.CloseServiceRestart, reason)
}

// Handler returns the HTTP handler (the mux with every route), without the
// per-address rate limit that the listener applies in front of it.
func (s *Server) Handler() http.Handler { return s.mux }

func (s *Server) ready() error {
	if !s.started.Load() {
		return errors.New("starting")
	}
	return nil
}

// start binds the HTTP and MQTT listeners and starts the bridge for Start.
// On error everything already started is stopped again.
func (s *Server) start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		s.Shutdown(context.Background())
		return fmt.Errorf("http listener %s: %w", s.cfg.HTTPAddr, unwrapOp(err))
	}
	s.httpLn = ln
	if err := s.bridge.Start(ctx); err != nil {
		ln.Close()
		s.Shutdown(context.Background())
		return fmt.Errorf("bridge: %w", err)
	}
	if err := s.broker.Start(); err != nil {
		ln.Close()
		s.Shutdown(context.Background())
		return fmt.Errorf("mqtt listener %s: %w", s.cfg.MQTTAddr, unwrapOp(err))
	}
	s.httpSrv = &http.Server{
		Handler:           s.limiter.Wrap(s.mux),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.httpErr = make(chan error, 1)
	s.httpDone = make(chan struct{})
	go func() {
		defer close(s.httpDone)
		s.httpErr <- s.httpSrv.Serve(ln)
	}()
	s.started.Store(true)
	s.log.Info("swapd started", "mqtt", s.broker.Addr(), "http", ln.Addr().String(), "data_dir", s.cfg.DataDir)
	if s.adminTokenPath != "" {
		s.log.Info("admin token", "path", s.adminTokenPath)
	}
	return nil
}

// unwrapOp turns "listen tcp :1883: bind: address already in use" into
// "address already in use".
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// Run starts the server and serves until ctx is done, then shuts down
// gracefully within 10 seconds.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-s.httpErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("http server: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(sctx); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

// Shutdown stops accepting HTTP and MQTT connections, closes every
// WebSocket with 1001, stops the bridge and closes the store. It is
// idempotent.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdownOnce.Do(func() {
		var errs []error
		s.started.Store(false)
		if s.httpSrv != nil {
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("http: %w", err))
			}
			<-s.httpDone // Serve returns at once after Shutdown starts
		}
		if s.hub != nil {
			if err := s.hub.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("websocket: %w", err))
			}
		}
		if s.broker != nil {
			if err := s.broker.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if s.bridge != nil {
			if err := s.bridge.Close(); err != nil {
				errs = append(errs, fmt.Errorf("bridge: %w", err))
			}
		}
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("store: %w", err))
		}
		s.shutdownErr = errors.Join(errs...)
		s.log.Info("swapd stopped")
	})
	return s.shutdownErr
}
