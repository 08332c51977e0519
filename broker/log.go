package broker

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Bounds of what one log line of the broker may carry.
const (
	// maxLogString bounds a string attribute (client ids and topics are
	// chosen by the client and may be 64 KiB long).
	maxLogString = 128
	// maxLogError bounds the text of an error attribute.
	maxLogError = 256
	// logPerClient is how many warnings (and errors) about one client are
	// logged per logWindow; the rest are counted and reported in one
	// "log lines suppressed" line when the next window starts.
	logPerClient = 10
	// logAllClients bounds such lines about all clients together per
	// logWindow.
	logAllClients = 1000
	logWindow     = time.Minute
	// maxLogClients bounds the clients the limiter tracks; beyond it they
	// share one budget.
	maxLogClients = 1024
)

// mochiSafeKeys are the attributes of mochi's log lines that may pass:
// none of them carries a packet, a payload, a password or user
// properties. Every other attribute of mochi's is dropped.
var mochiSafeKeys = map[string]bool{
	"component": true, "client": true, "listener": true, "remote": true,
	"old_remote": true, "new_remote": true, "error": true, "hook": true,
	"id": true, "protocol": true, "address": true, "version": true,
	"len": true, "keepalive": true, "recommended": true,
}

// deniedKeys are dropped from every line, mochi's or the broker's own.
var deniedKeys = map[string]bool{
	"pk": true, "packet": true, "payload": true, "will": true,
	"password": true, "secret": true, "token": true, "username": true,
	"properties": true, "user": true,
}

// mochiPerPacket are mochi's messages logged once per packet or per
// connection at warning or error level on the client's behalf: they are
// demoted to debug (the broker counts what matters in its metrics).
var mochiPerPacket = map[string]bool{
	"error processing packet":        true, // a second CONNECT, a write that failed, …
	"publish packet error":           true, // a hook refused a publish with a reason code
	"parse will error":               true,
	mqtt.ErrMinimumKeepalive.Error(): true, // a keepalive under 5 s, chosen by the client
}

// logHandler is the slog.Handler every log line of the broker goes
// through, mochi's included (as its Options.Logger). It never lets a
// packet, a payload, a password or any byte slice through: an attribute
// is kept only when it is a string (cut to maxLogString), a number, a
// bool, a duration, a time, an error (its text, cut to maxLogError) or an
// address, its key is not one of deniedKeys, and, for mochi's lines
// (strict), its key is one of mochiSafeKeys. mochi's per-packet warnings
// are demoted to debug. Warnings and errors about one client (an attribute
// "client" or "station") are limited to logPerClient per logWindow.
type logHandler struct {
	inner  slog.Handler
	strict bool
	lim    *logLimiter
}

func newLogHandler(inner slog.Handler, strict bool, lim *logLimiter) *logHandler {
	return &logHandler{inner: inner, strict: strict, lim: lim}
}

// Enabled implements slog.Handler. A line is only ever demoted, so the
// inner handler's answer for its level is a sound first filter.
func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	level := r.Level
	if h.strict && level > slog.LevelDebug && mochiPerPacket[r.Message] {
		level = slog.LevelDebug
	}
	if !h.inner.Enabled(ctx, level) {
		return nil
	}
	out := slog.NewRecord(r.Time, level, r.Message, r.PC)
	var who string
	r.Attrs(func(a slog.Attr) bool {
		if a, ok := h.clean(a); ok {
			out.AddAttrs(a)
			if (a.Key == "client" || a.Key == "station") && who == "" {
				who = a.Value.String()
			}
		}
		return true
	})
	if r.Level >= slog.LevelWarn && who != "" {
		ok, suppressed := h.lim.allow(who, r.Time)
		if !ok {
			return nil
		}
		if suppressed > 0 {
			s := slog.NewRecord(r.Time, slog.LevelWarn, "log lines suppressed", 0)
			s.AddAttrs(slog.String("client", who), slog.Int("lines", suppressed), slog.Duration("within", logWindow))
			if err := h.inner.Handle(ctx, s); err != nil {
				return err
			}
		}
	}
	return h.inner.Handle(ctx, out)
}

// WithAttrs implements slog.Handler.
func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if a, ok := h.clean(a); ok {
			kept = append(kept, a)
		}
	}
	return &logHandler{inner: h.inner.WithAttrs(kept), strict: h.strict, lim: h.lim}
}

// WithGroup implements slog.Handler.
func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{inner: h.inner.WithGroup(name), strict: h.strict, lim: h.lim}
}

// clean returns a, made safe to log, or false when it must be dropped.
func (h *logHandler) clean(a slog.Attr) (slog.Attr, bool) {
	k := strings.ToLower(a.Key)
	if deniedKeys[k] || h.strict && !mochiSafeKeys[k] {
		return a, false
	}
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, cut(v.String(), maxLogString)), true
	case slog.KindInt64, slog.KindUint64, slog.KindFloat64, slog.KindBool, slog.KindDuration, slog.KindTime:
		return slog.Attr{Key: a.Key, Value: v}, true
	case slog.KindGroup:
		var kept []any
		for _, g := range v.Group() {
			if g, ok := h.clean(g); ok {
				kept = append(kept, g)
			}
		}
		return slog.Group(a.Key, kept...), len(kept) > 0
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			if x == nil {
				return slog.Attr{}, false
			}
			return slog.String(a.Key, cut(x.Error(), maxLogError)), true
		case net.Addr:
			return slog.String(a.Key, cut(x.String(), maxLogString)), true
		}
	}
	return a, false // packets, payloads, byte slices, structs, maps
}

// cut bounds s to n bytes, marking a cut with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// logLimiter counts the warnings logged per client in fixed windows.
type logLimiter struct {
	mu  sync.Mutex
	m   map[string]*logCount
	all logCount // every client together
}

type logCount struct {
	start      time.Time
	n          int // lines logged in the window starting at start
	suppressed int // lines dropped in it
}

func newLogLimiter() *logLimiter { return &logLimiter{m: make(map[string]*logCount)} }

// allow reports whether a warning about client may be logged at now and,
// if so, how many about it were suppressed in the previous window.
func (l *logLimiter) allow(client string, now time.Time) (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.all.start) >= logWindow {
		l.all = logCount{start: now}
	}
	c := l.m[client]
	if c == nil {
		if len(l.m) >= maxLogClients {
			for k, e := range l.m {
				if now.Sub(e.start) >= logWindow && e.suppressed == 0 {
					delete(l.m, k)
				}
			}
		}
		if len(l.m) >= maxLogClients {
			client = "" // the clients beyond the bound share one budget
			if c = l.m[client]; c == nil {
				c = &logCount{start: now}
				l.m[client] = c
			}
		} else {
			c = &logCount{start: now}
			l.m[client] = c
		}
	}
	if now.Sub(c.start) >= logWindow {
		suppressed = c.suppressed
		*c = logCount{start: now}
	}
	if c.n >= logPerClient || l.all.n >= logAllClients {
		c.suppressed += 1 + suppressed // reported with the next line let through
		return false, 0
	}
	c.n++
	l.all.n++
	return true, suppressed
}
