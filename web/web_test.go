package web_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/web"
)

func serve(t *testing.T, opts web.Options) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	h := web.New(opts)
	mux.Handle("GET /{$}", h)
	mux.Handle("GET /ui/", h)
	mux.HandleFunc("GET /api/stations", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"stations":[]}`)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestServesDashboard(t *testing.T) {
	srv := serve(t, web.Options{})
	tests := []struct {
		path     string
		status   int
		ctype    string
		contains string
	}{
		{"/", 200, "text/html", `<script type="module" src="/ui/app.js">`},
		{"/ui/index.html", 200, "text/html", "swapbridge"},
		{"/ui/app.js", 200, "text/javascript", "LiveChannel"},
		{"/ui/live.js", 200, "text/javascript", "export class LiveChannel"},
		{"/ui/api.js", 200, "text/javascript", "export async function api"},
		{"/ui/style.css", 200, "text/css", ".station-grid"},
		{"/ui/icon.svg", 200, "image/svg+xml", "<svg"},
		{"/ui/nope.js", 404, "", ""},
		{"/ui/", 404, "", ""},
		{"/elsewhere", 404, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, body := get(t, srv.URL+tc.path, nil)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			if !strings.Contains(body, tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no nosniff header")
			}
		})
	}
}

func TestIndexHasContentSecurityPolicy(t *testing.T) {
	srv := serve(t, web.Options{})
	resp, _ := get(t, srv.URL+"/", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}

func TestETagRevalidation(t *testing.T) {
	srv := serve(t, web.Options{})
	resp, _ := get(t, srv.URL+"/ui/app.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	resp, body := get(t, srv.URL+"/ui/app.js", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Fatalf("revalidation: status %d, %d bytes; want 304 and no body", resp.StatusCode, len(body))
	}
}

func TestConfigKeepsSecretsOutOfNormalMode(t *testing.T) {
	type config struct {
		Demo      bool   `json:"demo"`
		DemoUser  string `json:"demo_user"`
		DemoToken string `json:"demo_token"`
	}
	read := func(srv *httptest.Server) (config, *http.Response) {
		resp, body := get(t, srv.URL+"/ui/config.json", nil)
		var c config
		if err := json.Unmarshal([]byte(body), &c); err != nil {
			t.Fatalf("config.json: %v: %s", err, body)
		}
		return c, resp
	}
	normal, resp := read(serve(t, web.Options{}))
	if normal.Demo || normal.DemoToken != "" || normal.DemoUser != "" {
		t.Errorf("normal mode config = %+v, want no demo and no token", normal)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("config.json Cache-Control %q, want no-store", resp.Header.Get("Cache-Control"))
	}
	demo, _ := read(serve(t, web.Options{DemoUser: "demo", DemoToken: "tok-123"}))
	if !demo.Demo || demo.DemoUser != "demo" || demo.DemoToken != "tok-123" {
		t.Errorf("demo config = %+v", demo)
	}
	half, _ := read(serve(t, web.Options{DemoUser: "demo"}))
	if half.Demo {
		t.Error("a demo user without a token must not enable the demo sign-in")
	}
}

func TestRejectsOtherMethods(t *testing.T) {
	h := web.New(web.Options{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST / = %d, want 405", rec.Code)
	}
}

func TestRegisterAndDemoSignIn(t *testing.T) {
	mux := http.NewServeMux()
	if web.Mounted(mux) {
		t.Fatal("Mounted on an empty mux")
	}
	web.Register(mux)
	if !web.Mounted(mux) {
		t.Fatal("not Mounted after Register")
	}
	var demo web.DemoSignIn
	mux.Handle("GET /ui/config.json", &demo)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	_, body := get(t, srv.URL+"/ui/config.json", nil)
	if strings.Contains(body, "demo_token") || !strings.Contains(body, `"demo":false`) {
		t.Fatalf("before Set: %s", body)
	}
	demo.Set("rider", "secret-1")
	_, body = get(t, srv.URL+"/ui/config.json", nil)
	if !strings.Contains(body, `"demo_token":"secret-1"`) || !strings.Contains(body, `"demo_user":"rider"`) {
		t.Fatalf("after Set: %s", body)
	}
	if resp, _ := get(t, srv.URL+"/ui/app.js", nil); resp.StatusCode != 200 {
		t.Fatalf("app.js beside the demo config: %d", resp.StatusCode)
	}
}
