package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync/atomic"
	"time"
)

//go:embed static
var embedded embed.FS

// Options configures the dashboard handler. The zero value serves the
// dashboard for normal mode.
type Options struct {
	// DemoUser and DemoToken, when both set, are offered on the page as a
	// one-click "use the demo user" sign-in. Set them only in demo mode: the
	// token is served to anyone who can load the page.
	DemoUser  string
	DemoToken string
}

// file is one embedded file, ready to serve.
type file struct {
	data  []byte
	ctype string
	etag  string
}

// Handler serves the dashboard: GET / (index.html), GET /ui/<file> (the
// assets) and GET /ui/config.json (the page's runtime settings). Other
// paths answer 404. It is safe for concurrent use.
type Handler struct {
	files  map[string]file // by URL path, "/" and "/ui/…"
	config []byte
}

// New returns the dashboard handler.
func New(opts Options) *Handler {
	h := &Handler{files: map[string]file{}}
	sub, err := fs.Sub(embedded, "static")
	if err != nil {
		panic("web: embedded static dir missing: " + err.Error())
	}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(p))
		switch path.Ext(p) {
		case ".js":
			ct = "text/javascript; charset=utf-8"
		case ".svg":
			ct = "image/svg+xml"
		case ".webmanifest":
			ct = "application/manifest+json"
		}
		if ct == "" {
			ct = "application/octet-stream"
		}
		f := file{data: b, ctype: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		h.files["/ui/"+p] = f
		if p == "index.html" {
			h.files["/"] = f
		}
		return nil
	})
	if err != nil {
		panic("web: reading embedded files: " + err.Error())
	}
	h.config = configJSON(opts.DemoUser, opts.DemoToken)
	return h
}

// configJSON is the body of /ui/config.json.
func configJSON(user, token string) []byte {
	cfg := struct {
		Demo      bool   `json:"demo"`
		DemoUser  string `json:"demo_user,omitempty"`
		DemoToken string `json:"demo_token,omitempty"`
	}{}
	if user != "" && token != "" {
		cfg.Demo, cfg.DemoUser, cfg.DemoToken = true, user, token
	}
	b, _ := json.Marshal(cfg)
	return b
}

// Register mounts the dashboard for normal mode on mux at GET / (exactly)
// and GET /ui/.
func Register(mux *http.ServeMux) {
	h := New(Options{})
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /ui/", h)
}

// Mounted reports whether mux already serves the dashboard at GET /.
func Mounted(mux *http.ServeMux) bool {
	_, pattern := mux.Handler(&http.Request{Method: http.MethodGet, Host: "localhost", URL: &url.URL{Path: "/"}})
	return pattern == "GET /{$}"
}

// DemoSignIn serves /ui/config.json in demo mode, offering the demo user's
// one-click sign-in once Set has named it; before that it answers as in
// normal mode. Mount it at "GET /ui/config.json", a more specific pattern
// than Register's, so it can sit beside a normal-mode dashboard. It is safe
// for concurrent use.
type DemoSignIn struct {
	body atomic.Pointer[[]byte]
}

// Set makes the page offer user with token.
func (d *DemoSignIn) Set(user, token string) {
	b := configJSON(user, token)
	d.body.Store(&b)
}

// ServeHTTP serves the config.
func (d *DemoSignIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := configJSON("", "")
	if p := d.body.Load(); p != nil {
		b = *p
	}
	writeConfig(w, b)
}

func writeConfig(w http.ResponseWriter, b []byte) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}

// contentSecurityPolicy keeps the page to its own scripts, styles and
// connections (same-origin HTTP and WebSocket).
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// ServeHTTP serves one dashboard file.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "/ui/config.json" {
		writeConfig(w, h.config)
		return
	}
	f, ok := h.files[r.URL.Path]
	if !ok || strings.HasSuffix(r.URL.Path, "/") && r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", f.ctype)
	hdr.Set("ETag", f.etag)
	hdr.Set("Cache-Control", "no-cache")
	if strings.HasPrefix(f.ctype, "text/html") {
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
}
