package realtime

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// revAuth is an Authenticator whose tokens can be revoked; during, when
// set, runs once inside the first UserForToken call, after the token was
// looked up.
type revAuth struct {
	mu     sync.Mutex
	tokens map[string]string
	during func()
}

func (a *revAuth) UserForToken(tok string) (string, error) {
	a.mu.Lock()
	uid, ok := a.tokens[tok]
	during := a.during
	a.during = nil
	a.mu.Unlock()
	if during != nil {
		during()
	}
	if !ok {
		return "", errBadToken
	}
	return uid, nil
}

func (a *revAuth) revoke(uid string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for tok, u := range a.tokens {
		if u == uid {
			delete(a.tokens, tok)
		}
	}
}

func revokeEnv(t *testing.T, auth *revAuth) (*Hub, *store.Store, string) {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "swapd.db"), store.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	stations := &testStations{inv: map[string]wire.Inventory{"s1": {TotalSlots: 4, EmptySlots: 4}}}
	hub, err := NewHub(Config{RequireStationToken: true}, st, stations, auth)
	if err != nil {
		t.Fatal(err)
	}
	st.SetCommitListener(hub.Publish)
	mux := http.NewServeMux()
	hub.Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		srv.Close()
		st.Close()
	})
	return hub, st, "ws" + strings.TrimPrefix(srv.URL, "http")
}

func wsDial(t *testing.T, url, tok string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, bearer(tok))
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, resp, err
}

// expectClose reads until the connection closes and checks the code.
func expectClose(t *testing.T, c *websocket.Conn, code int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, code) {
			t.Fatalf("connection ended with %v, want close %d", err, code)
		}
		return
	}
}

// DisconnectUser closes every WebSocket opened with one of the user's
// tokens, on any channel, with 1008, and no one else's.
func TestDisconnectUser(t *testing.T) {
	auth := &revAuth{tokens: map[string]string{"tok-a": "u1", "tok-b": "u1", "tok-c": "u2"}}
	hub, st, url := revokeEnv(t, auth)
	var mine []*websocket.Conn
	for _, x := range []struct{ path, tok string }{
		{NotificationsPath, "tok-a"}, {NotificationsPath, "tok-b"}, {StationsPath + "s1/", "tok-a"},
	} {
		c, _, err := wsDial(t, url+x.path, x.tok)
		if err != nil {
			t.Fatalf("dial %s: %v", x.path, err)
		}
		if m := readMsg(t, c); m.Type != wire.TypeHello {
			t.Fatalf("first message %s", m.Type)
		}
		mine = append(mine, c)
	}
	other, _, err := wsDial(t, url+NotificationsPath, "tok-c")
	if err != nil {
		t.Fatal(err)
	}
	readMsg(t, other)

	auth.revoke("u1")
	if n := hub.DisconnectUser("u1", "token revoked"); n != 3 {
		t.Fatalf("DisconnectUser closed %d, want 3", n)
	}
	for _, c := range mine {
		expectClose(t, c, websocket.ClosePolicyViolation)
	}
	if _, resp, err := wsDial(t, url+NotificationsPath, "tok-a"); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: %v %v, want 401", err, resp)
	}
	// The other user's connection is untouched and gets its events.
	if _, err := st.Update(context.Background(), func(tx *store.Tx) error {
		ev := userEvent("u2", "still here")
		return tx.Append(&ev)
	}); err != nil {
		t.Fatal(err)
	}
	if m := readMsg(t, other); m.Title != "still here" {
		t.Fatalf("u2 got %+v", m)
	}
}

// A connection that authenticated just before its token was revoked, and
// subscribed only after DisconnectUser walked the hub, is closed too.
func TestDisconnectUserDuringHandshake(t *testing.T) {
	auth := &revAuth{tokens: map[string]string{"tok-a": "u1"}}
	hub, _, url := revokeEnv(t, auth)
	auth.during = func() {
		auth.revoke("u1")
		if n := hub.DisconnectUser("u1", "token revoked"); n != 0 {
			t.Errorf("DisconnectUser found %d connections before the upgrade", n)
		}
	}
	c, _, err := wsDial(t, url+NotificationsPath, "tok-a")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	expectClose(t, c, websocket.ClosePolicyViolation)
}
