package server

import (
	"io"
	"net/http"
	"testing"
)

func TestPprofOnlyWhenEnabledAndOnlyForTheAdmin(t *testing.T) {
	get := func(t *testing.T, srv *Server, path, token string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+srv.HTTPAddr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	off := startServer(t, testConfig(t))
	if code, _ := get(t, off, "/debug/pprof/heap", testAdminToken); code != http.StatusNotFound {
		t.Errorf("pprof off: GET /debug/pprof/heap = %d, want 404", code)
	}

	cfg := testConfig(t)
	cfg.Pprof = true
	on := startServer(t, cfg)
	for _, tc := range []struct{ token string }{{""}, {"wrong"}} {
		if code, _ := get(t, on, "/debug/pprof/heap?gc=1", tc.token); code != http.StatusUnauthorized {
			t.Errorf("token %q: GET /debug/pprof/heap = %d, want 401", tc.token, code)
		}
	}
	// The admin token is taken from the Authorization header only.
	if code, _ := get(t, on, "/debug/pprof/heap?gc=1&token="+testAdminToken, ""); code != http.StatusUnauthorized {
		t.Errorf("admin token as ?token=: GET /debug/pprof/heap = %d, want 401", code)
	}
	code, body := get(t, on, "/debug/pprof/heap?gc=1", testAdminToken)
	if code != http.StatusOK || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
		t.Errorf("admin: GET /debug/pprof/heap = %d, %d bytes; want 200 and a gzipped profile", code, len(body))
	}
	if code, body := get(t, on, "/debug/pprof/goroutine?debug=1", testAdminToken); code != http.StatusOK || len(body) == 0 {
		t.Errorf("admin: GET /debug/pprof/goroutine = %d", code)
	}
}
