package reliability

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/wire"
)

// TestSecretsNeverLogged runs swapd at debug level through provisioning,
// station logins with a wrong and the right secret, a second CONNECT (with
// the secret) on a live connection, user calls with the
// token in the header and in the query, and a WebSocket with ?token=; the
// captured log must contain none of the secrets or tokens (the generated
// admin token included: only its file's path is logged).
func TestSecretsNeverLogged(t *testing.T) {
	dir := t.TempDir()
	p := startSwapd(t, dir, "SWAPD_LOG_LEVEL=debug", "SWAPD_ADMIN_TOKEN=") // generated into <data>/admin.token
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatalf("generated admin token: %v", err)
	}
	adminTok := strings.TrimSpace(string(b))
	if fi, _ := os.Stat(filepath.Join(dir, "admin.token")); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("admin.token mode %v, want 0600", fi.Mode().Perm())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := client.New(p.http, adminTok)
	secrets := provision(t, admin, 4, "LOG-1")
	u, err := admin.CreateUser(ctx, "log-user")
	if err != nil {
		t.Fatal(err)
	}
	const wrong = "wrong-secret-Zq8v1xK3"

	if _, err := dialStation(p.mqtt, "LOG-1", wrong, nil); err == nil {
		t.Error("wrong secret accepted")
	}
	// A second CONNECT on a live connection: mochi refuses it and logs the
	// packet, password included, unless the broker's log handler drops it.
	c, code, err := mqtttest.Connect(p.mqtt, "LOG-1", secrets["LOG-1"], mqtttest.V311, 15*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("station login: code %#x, %v", code, err)
	}
	if err := c.Write(mqtttest.ConnectPacket("LOG-1", secrets["LOG-1"])); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadUntilClosed(); !mqtttest.Closed(err) {
		t.Errorf("a second CONNECT: connection not closed (%v)", err)
	}
	c.Close()
	st := startAckingStation(t, p.mqtt, "LOG-1", secrets["LOG-1"], "boot-log", 1, 4, true)
	user := client.New(p.http, u.Token)
	waitAvailable(t, user, "LOG-1", 4)
	bk, err := user.Book(ctx, "LOG-1")
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, user, bk.ID, wire.BookingStatusReady)
	for _, path := range []string{"/api/bookings?token=" + u.Token, "/api/admin/stations?token=" + adminTok, "/api/bookings?token=" + wrong} {
		resp, err := http.Get(p.http + path)
		if err == nil {
			resp.Body.Close()
		}
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.http, "http")+"/ws/notifications/?token="+u.Token, nil)
	if err != nil {
		t.Fatalf("websocket: %v", err)
	}
	var hello map[string]any
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&hello); err != nil {
		t.Fatal(err)
	}
	ws.Close()
	if _, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.http, "http")+"/ws/notifications/?token="+wrong, nil); err == nil {
		t.Error("websocket with a wrong token accepted")
	}
	st.close()
	p.stop(t)

	out := p.log.String()
	lines := strings.Count(out, "\n")
	if lines < 10 || !strings.Contains(out, `"level":"DEBUG"`) {
		t.Fatalf("expected a debug log of the whole session, got %d lines", lines)
	}
	if !strings.Contains(out, "admin.token") {
		t.Errorf("the generated admin token's path is not logged")
	}
	for name, secret := range map[string]string{
		"admin token": adminTok, "station secret": secrets["LOG-1"], "wrong secret": wrong, "user token": u.Token,
		// A logged packet's []byte password is base64 in JSON.
		"station secret (base64)": base64.StdEncoding.EncodeToString([]byte(secrets["LOG-1"])),
		"wrong secret (base64)":   base64.StdEncoding.EncodeToString([]byte(wrong)),
	} {
		if strings.Contains(out, secret) {
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, secret) {
					t.Errorf("%s appears in the log: %s", name, l)
					break
				}
			}
		}
	}
	// Every line is structured JSON (no stray prints that could carry data).
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("log line is not JSON: %.200s", l)
		}
	}
}
