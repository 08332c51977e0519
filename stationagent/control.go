package stationagent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Status is the agent's state as reported by the control socket's
// GET /v1/status and by (*Agent).Status.
type Status struct {
	StationID    string    `json:"station_id"`
	BootID       string    `json:"boot_id"`
	AgentVersion string    `json:"agent_version"`
	Started      time.Time `json:"started"`
	// Broker is the server the agent is on, or trying when not
	// connected; Servers is the configured list, in order.
	Broker         string        `json:"broker"`
	Servers        []string      `json:"servers"`
	Connected      bool          `json:"connected"`
	ConnectedSince time.Time     `json:"connected_since,omitzero"`
	Connects       int           `json:"connects"`
	LastError      string        `json:"last_error,omitempty"`
	LastSeqQueued  uint64        `json:"last_seq_queued"`
	LastSeqSent    uint64        `json:"last_seq_sent"`
	LastSeqAcked   uint64        `json:"last_seq_acked"`
	OutboxDepth    int           `json:"outbox_depth"`
	Reservations   []Reservation `json:"reservations"`
	Driver         string        `json:"driver"`
	DriverOK       bool          `json:"driver_ok"`
	DriverError    string        `json:"driver_error,omitempty"`
	LastRead       time.Time     `json:"last_read,omitzero"`
	Slots          int           `json:"slots"`

	slots []wire.Slot
}

// SlotsView is the control socket's GET /v1/slots answer.
type SlotsView struct {
	TS           time.Time     `json:"ts"`
	Slots        []wire.Slot   `json:"slots"`
	Reservations []Reservation `json:"reservations"`
}

// Status returns a copy of the agent's current state. It does not block on
// I/O other than a read of the outbox size.
func (a *Agent) Status() Status {
	a.mu.Lock()
	s := a.info
	s.Reservations = slices.Clone(s.Reservations)
	s.Servers = slices.Clone(s.Servers)
	s.slots = nil
	st, open := a.st, a.st != nil && !a.stClosed
	a.mu.Unlock()
	if s.Reservations == nil {
		s.Reservations = []Reservation{}
	}
	if open {
		s.OutboxDepth = st.outboxDepth() // a closed db answers 0
	}
	return s
}

// Slots returns the slots as last read from the driver.
func (a *Agent) Slots() SlotsView {
	a.mu.Lock()
	defer a.mu.Unlock()
	v := SlotsView{TS: a.info.LastRead, Slots: slices.Clone(a.info.slots), Reservations: slices.Clone(a.info.Reservations)}
	if v.Slots == nil {
		v.Slots = []wire.Slot{}
	}
	if v.Reservations == nil {
		v.Reservations = []Reservation{}
	}
	return v
}

// TechnicianUnlock opens a slot without a reservation, on behalf of a
// technician on site. It is recorded in the journal with reason and the
// server sees the change through telemetry. It blocks until the main loop
// has executed it or ctx is done.
func (a *Agent) TechnicianUnlock(ctx context.Context, slot int, reason string) error {
	reason = strings.TrimSpace(reason)
	if reason == "" {
		return fmt.Errorf("%w: a reason is required", ErrBadRequest)
	}
	if len(reason) > 500 {
		return fmt.Errorf("%w: reason longer than 500 bytes", ErrBadRequest)
	}
	if a.local == nil {
		return errors.New("agent not running")
	}
	r := localReq{slot: slot, reason: reason, reply: make(chan error, 1)}
	select {
	case a.local <- r:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// controlServer serves the local control API over a unix socket (mode 0600).
type controlServer struct {
	srv  *http.Server
	ln   net.Listener
	path string
	wg   sync.WaitGroup
	once sync.Once
}

func (a *Agent) startControl(path string) (*controlServer, error) {
	// A stale socket from a crashed run: the data dir lock is ours, so no
	// other agent is using it.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	mux.HandleFunc("GET /v1/slots", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Slots())
	})
	mux.HandleFunc("POST /v1/unlock", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Slot   int    `json:"slot"`
			Reason string `json:"reason"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request body"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := a.TechnicianUnlock(ctx, req.Slot, req.Reason); err != nil {
			code := http.StatusInternalServerError
			if errors.Is(err, ErrBadRequest) {
				code = http.StatusBadRequest
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	cs := &controlServer{
		srv:  &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelDebug)},
		ln:   ln,
		path: path,
	}
	cs.wg.Go(func() { _ = cs.srv.Serve(ln) })
	return cs, nil
}

// Close stops the server and removes the socket. It is idempotent.
func (cs *controlServer) Close() {
	cs.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = cs.srv.Shutdown(ctx)
		cs.wg.Wait()
		_ = os.Remove(cs.path)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrAgentNotRunning is returned by ControlClient when nothing listens on
// the control socket.
var ErrAgentNotRunning = errors.New("no agent is running (control socket not answering)")

// ControlClient talks to a running agent over its control socket.
type ControlClient struct {
	path string
	hc   *http.Client
}

// NewControlClient returns a client for the unix socket at path.
func NewControlClient(path string) *ControlClient {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &ControlClient{path: path, hc: &http.Client{Transport: tr, Timeout: 35 * time.Second}}
}

func (c *ControlClient) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://agent"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: %s", ErrAgentNotRunning, c.path)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("agent answered %s", resp.Status)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Status fetches the agent's status.
func (c *ControlClient) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}

// Slots fetches the slots as last read by the agent.
func (c *ControlClient) Slots(ctx context.Context) (SlotsView, error) {
	var v SlotsView
	err := c.do(ctx, http.MethodGet, "/v1/slots", nil, &v)
	return v, err
}

// Unlock asks the agent for a technician unlock.
func (c *ControlClient) Unlock(ctx context.Context, slot int, reason string) error {
	return c.do(ctx, http.MethodPost, "/v1/unlock", map[string]any{"slot": slot, "reason": reason}, nil)
}

// ParseLevel turns debug, info, warn or error into a slog.Level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}
