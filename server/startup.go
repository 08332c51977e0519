package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// New opens the data dir and builds every part; nothing listens until Start.
// It fails with a clear error when the data dir cannot be used (for example
// when another swapd holds it) or when a listen address is taken: every
// configured address is bound once and released before anything is logged
// or written, and every taken one is named in the one error. A data dir
// that New found absent or empty is left as it was when New fails.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := checkListenAddrs(cfg); err != nil {
		return nil, err
	}
	undo, err := freshDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s, err := newServer(cfg, log)
	if err != nil {
		undo()
		return nil, err
	}
	s.undoDataDir = undo
	return s, nil
}

// Start binds the HTTP and MQTT listeners and starts the bridge. On error
// everything already started is stopped again, and a data dir that New
// found absent or empty is left so again.
func (s *Server) Start(ctx context.Context) error {
	if err := s.start(ctx); err != nil {
		if s.undoDataDir != nil {
			s.undoDataDir()
		}
		return err
	}
	s.undoDataDir = nil
	return nil
}

// listenAddr is one address swapd listens on.
type listenAddr struct{ what, addr string }

func (c Config) listenAddrs() []listenAddr {
	var out []listenAddr
	for _, a := range []listenAddr{{"http listener", c.HTTPAddr}, {"mqtt listener", c.MQTTAddr}, {"mqtt tls listener", c.MQTTTLS.Addr}} {
		if a.addr != "" {
			out = append(out, a)
		}
	}
	return out
}

// checkListenAddrs binds every configured listen address at once (so one
// address configured twice is caught too) and releases them again. The
// error names every address that could not be bound, in one line:
// "http listener :8000: address already in use; mqtt listener :1883:
// address already in use".
func checkListenAddrs(cfg Config) error {
	var bad []string
	var lns []net.Listener
	for _, a := range cfg.listenAddrs() {
		ln, err := net.Listen("tcp", a.addr)
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s %s: %v", a.what, a.addr, unwrapListen(err)))
			continue
		}
		lns = append(lns, ln)
	}
	for _, ln := range lns {
		ln.Close()
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// unwrapListen turns "listen tcp :1883: bind: address already in use" into
// "address already in use".
func unwrapListen(err error) error {
	err = unwrapOp(err)
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// freshDataDir reports how to put a data dir back the way it is now, if it
// is absent or empty: undo removes what a failed start created in it (the
// admin token, the store), or the directories it created. For a data dir
// that holds anything, undo does nothing.
func freshDataDir(dir string) (undo func(), err error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("data dir %s: %w", dir, err)
	}
	// The topmost directory that does not exist yet: MkdirAll creates it
	// and everything below.
	missing := ""
	for p := abs; ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			return func() {}, nil
		}
		missing = p
		if filepath.Dir(p) == p {
			break
		}
	}
	if missing != "" {
		return func() { os.RemoveAll(missing) }, nil
	}
	f, err := os.Open(abs)
	if err != nil {
		return func() {}, nil
	}
	_, err = f.Readdirnames(1)
	f.Close()
	if !errors.Is(err, io.EOF) {
		return func() {}, nil // not empty, or not a readable directory
	}
	return func() {
		names, _ := os.ReadDir(abs)
		for _, e := range names {
			os.RemoveAll(filepath.Join(abs, e.Name()))
		}
	}, nil
}
