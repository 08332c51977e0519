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
	"path"
	"strings"
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
	cfg := struct {
		Demo      bool   `json:"demo"`
		DemoUser  string `json:"demo_user,omitempty"`
		DemoToken string `json:"demo_token,omitempty"`
	}{}
	if opts.DemoUser != "" && opts.DemoToken != "" {
		cfg.Demo, cfg.DemoUser, cfg.DemoToken = true, opts.DemoUser, opts.DemoToken
	}
	h.config, _ = json.Marshal(cfg)
	return h
}

// Register mounts the dashboard on mux at GET / (exactly) and GET /ui/.
func Register(mux *http.ServeMux, opts Options) {
	h := New(opts)
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /ui/", h)
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
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Cache-Control", "no-store")
		w.Write(h.config)
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
