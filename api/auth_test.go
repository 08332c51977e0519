package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/api"
	"github.com/swapbridge/swapbridge/store"
)

// authServer serves an API over a real store with one user, bob, whose
// token is userTok. The bridge is not needed by the routes these tests call.
func authServer(t *testing.T, cfg api.Config) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateUser(context.Background(), store.User{ID: "bob", TokenHash: api.HashToken(userTok), CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.AdminToken, cfg.Registerer = adminToken, reg
	a, err := api.New(cfg, st, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, reg
}

const userTok = "bob-user-token"

func do(t *testing.T, ctx context.Context, method, url, token string) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := http.Client{Timeout: time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestFailedLoginsAreSlowed: every wrong admin or user token from one
// address is answered 401 a little later than the one before (100 ms ×
// the failures so far); a missing token is not a failure.
func TestFailedLoginsAreSlowed(t *testing.T) {
	srv, reg := authServer(t, api.Config{})
	ctx := context.Background()
	if code, _ := do(t, ctx, "GET", srv.URL+"/api/admin/stations", ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	if n := counter(t, reg, "swapd_http_auth_failures_total"); n != 0 {
		t.Errorf("a missing token counted as a failed login (%v)", n)
	}
	fails := []struct{ method, path, token string }{
		{"GET", "/api/admin/stations", "wrong-admin-token"},
		{"POST", "/api/admin/users", adminToken + "x"},
		{"GET", "/api/bookings", "wrong-user-token"},
		{"GET", "/api/events", "wrong-user-token"},
		{"GET", "/api/bookings?token=wrong-user-token", ""},
	}
	for i, f := range fails {
		start := time.Now()
		code, err := do(t, ctx, f.method, srv.URL+f.path, f.token)
		took := time.Since(start)
		if err != nil || code != http.StatusUnauthorized {
			t.Fatalf("%s %s: %d %v, want 401", f.method, f.path, code, err)
		}
		if want := time.Duration(i+1) * api.DefaultLoginDelay; took < want {
			t.Errorf("failure %d (%s %s) answered after %v, want at least %v", i+1, f.method, f.path, took, want)
		}
	}
	if n := counter(t, reg, "swapd_http_auth_failures_total"); n != float64(len(fails)) {
		t.Errorf("swapd_http_auth_failures_total = %v, want %d", n, len(fails))
	}
	// The right tokens still work.
	if code, _ := do(t, ctx, "GET", srv.URL+"/api/admin/stations", adminToken); code != http.StatusOK {
		t.Errorf("admin token: %d", code)
	}
	if code, _ := do(t, ctx, "GET", srv.URL+"/api/events", userTok); code != http.StatusOK {
		t.Errorf("user token: %d", code)
	}
}

// TestRightTokenNotHeldByFailures: while a failed login of an address is
// held back, a right admin or user token from that address is answered at
// once (no lock is held during the wait), and the held request ends as
// soon as its client goes away.
func TestRightTokenNotHeldByFailures(t *testing.T) {
	entered := make(chan struct{}, 1)
	srv, _ := authServer(t, api.Config{
		LoginDelay: time.Hour, LoginDelayMax: time.Hour,
		ClientIP: func(*http.Request) string {
			select {
			case entered <- struct{}{}:
			default:
			}
			return "10.0.0.1"
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	held := make(chan error, 1)
	go func() {
		_, err := do(t, ctx, "GET", srv.URL+"/api/admin/stations", "wrong-admin-token")
		held <- err
	}()
	<-entered // the failed login is being held back
	if code, err := do(t, context.Background(), "GET", srv.URL+"/api/admin/stations", adminToken); err != nil || code != http.StatusOK {
		t.Errorf("admin token during a held failure: %d %v, want 200", code, err)
	}
	if code, err := do(t, context.Background(), "GET", srv.URL+"/api/events", userTok); err != nil || code != http.StatusOK {
		t.Errorf("user token during a held failure: %d %v, want 200", code, err)
	}
	cancel()
	if err := <-held; err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("held request: %v, want cancelled", err)
	}
	srv.Close() // returns once every handler has returned: none waits out its hour
}

func TestShortAdminTokenRefusedByNew(t *testing.T) {
	_, err := api.New(api.Config{AdminToken: "adm"}, nil, nil, nil)
	if err == nil || err.Error() != "admin token too short: 3 characters, need at least 32" {
		t.Errorf("New with a 3-character token: %v", err)
	}
	if _, err := api.New(api.Config{AdminToken: strings.Repeat("a", 32)}, nil, nil, nil); err != nil {
		t.Errorf("New with 32 characters: %v", err)
	}
}
