package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
)

// station logs in as sid; lost reports the end of the connection.
func station(t *testing.T, addr, sid, secret string) (c paho.Client, lost chan error, err error) {
	t.Helper()
	lost = make(chan error, 1)
	opts := paho.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(sid).SetUsername(sid).SetPassword(secret).
		SetProtocolVersion(4).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	c = paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatal("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, lost, nil
}

func mustLogin(t *testing.T, addr, sid, secret string) (paho.Client, chan error) {
	t.Helper()
	c, lost, err := station(t, addr, sid, secret)
	if err != nil {
		t.Fatalf("login %s: %v", sid, err)
	}
	return c, lost
}

func expectLost(t *testing.T, lost chan error, what string) {
	t.Helper()
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: the session was not closed", what)
	}
}

// alive publishes the station's status at QoS 1 and waits for the PUBACK.
func alive(t *testing.T, c paho.Client, sid, what string) {
	t.Helper()
	tok := c.Publish("swap/v1/stations/"+sid+"/status", 1, false, `{"online":true,"boot_id":"b1","ts":"2026-01-01T00:00:00Z","agent_version":"t","slots":4}`)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("%s: the session is not alive: %v", what, tok.Error())
	}
}

func provision(t *testing.T, base, sid string) string {
	t.Helper()
	a := call(t, "POST", base+"/api/admin/stations", adminToken, `{"id":"`+sid+`","slots":4}`)
	if a.status != http.StatusCreated {
		t.Fatalf("provision: %d %s", a.status, a.raw)
	}
	return a.body["secret"].(string)
}

func TestRotateStationSecret(t *testing.T) {
	sd := swapdtest.Start(t, nil)
	base, mq := sd.HTTP, sd.MQTT
	s1 := provision(t, base, "st-1")
	_, lost := mustLogin(t, mq, "st-1", s1)

	// Grace 0 (an empty body): the session is closed, the old secret refused.
	a := call(t, "POST", base+"/api/admin/stations/st-1/secret", adminToken, "")
	s2, _ := a.body["secret"].(string)
	if a.status != http.StatusOK || a.body["id"] != "st-1" || len(s2) < 32 || s2 == s1 {
		t.Fatalf("rotate: %d %s", a.status, a.raw)
	}
	expectLost(t, lost, "rotation with grace 0")
	if _, _, err := station(t, mq, "st-1", s1); err == nil {
		t.Fatal("the old secret still logs in")
	}
	c2, lost2 := mustLogin(t, mq, "st-1", s2)

	// With a grace: the session stays and both secrets log in.
	a = call(t, "POST", base+"/api/admin/stations/st-1/secret", adminToken, `{"grace":"1h"}`)
	s3, _ := a.body["secret"].(string)
	if a.status != http.StatusOK || s3 == "" || s3 == s2 {
		t.Fatalf("rotate with grace: %d %s", a.status, a.raw)
	}
	alive(t, c2, "st-1", "after a rotation with grace")
	c3, lost3 := mustLogin(t, mq, "st-1", s2) // takes over
	expectLost(t, lost2, "takeover")
	alive(t, c3, "st-1", "the old secret during the grace")
	c4, _ := mustLogin(t, mq, "st-1", s3)
	expectLost(t, lost3, "takeover")
	alive(t, c4, "st-1", "the new secret")

	// Bad input is refused and changes nothing.
	for _, tc := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/api/admin/stations/st-1/secret", `{"grace":"-1s"}`, 400, "invalid_field"},
		{"/api/admin/stations/st-1/secret", `{"grace":"soon"}`, 400, "invalid_field"},
		{"/api/admin/stations/st-1/secret", `{"grace":"100000h"}`, 400, "invalid_field"},
		{"/api/admin/stations/st-1/secret", `{"grace":5}`, 400, "invalid_field"},
		{"/api/admin/stations/st-1/secret", `{"grace":`, 400, "invalid_json"},
		{"/api/admin/stations/nope/secret", `{}`, 404, "station_not_found"},
		{"/api/admin/stations/b%21d/secret", `{}`, 400, "invalid_id"},
	} {
		if a := call(t, "POST", base+tc.path, adminToken, tc.body); a.status != tc.status || code(a) != tc.code {
			t.Errorf("POST %s %s: %d %s, want %d %s", tc.path, tc.body, a.status, a.raw, tc.status, tc.code)
		}
	}
	if a := call(t, "POST", base+"/api/admin/stations/st-1/secret", "", `{}`); a.status != http.StatusUnauthorized {
		t.Errorf("without the admin token: %d", a.status)
	}
	alive(t, c4, "st-1", "after refused rotations")
	if _, _, err := station(t, mq, "st-1", s3); err != nil {
		t.Errorf("the current secret after refused rotations: %v", err)
	}
}

func TestDeleteStationRoute(t *testing.T) {
	sd := swapdtest.Start(t, nil)
	base, mq := sd.HTTP, sd.MQTT
	secret := provision(t, base, "st-1")
	provision(t, base, "st-2")
	c, lost := mustLogin(t, mq, "st-1", secret)
	alive(t, c, "st-1", "before the delete")
	before := call(t, "GET", base+"/api/events?limit=1000", adminToken, "")

	if a := call(t, "DELETE", base+"/api/admin/stations/st-1", adminToken, ""); a.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", a.status, a.raw)
	}
	expectLost(t, lost, "delete")
	if _, _, err := station(t, mq, "st-1", secret); err == nil {
		t.Fatal("a deleted station logs in")
	}
	if a := call(t, "GET", base+"/api/stations/st-1", "", ""); a.status != http.StatusNotFound || code(a) != "station_not_found" {
		t.Errorf("GET deleted station: %d %s", a.status, a.raw)
	}
	for _, path := range []string{"/api/stations", "/api/admin/stations"} {
		if a := call(t, "GET", base+path, adminToken, ""); a.status != 200 || strings.Contains(a.raw, `"st-1"`) || !strings.Contains(a.raw, `"st-2"`) {
			t.Errorf("GET %s: %d %s", path, a.status, a.raw)
		}
	}
	after := call(t, "GET", base+"/api/events?limit=1000", adminToken, "")
	if n, m := len(before.body["events"].([]any)), len(after.body["events"].([]any)); n == 0 || m < n {
		t.Errorf("events: %d before, %d after; past events must stay", n, m)
	}
	if a := call(t, "DELETE", base+"/api/admin/stations/st-1", adminToken, ""); a.status != http.StatusNotFound {
		t.Errorf("second delete: %d %s", a.status, a.raw)
	}
	if a := call(t, "DELETE", base+"/api/admin/stations/b%21d", adminToken, ""); a.status != http.StatusBadRequest || code(a) != "invalid_id" {
		t.Errorf("bad id: %d %s", a.status, a.raw)
	}
}

func dialNotifications(t *testing.T, base, tok string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	c, resp, err := d.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws/notifications/", http.Header{"Authorization": {"Bearer " + tok}})
	if err == nil {
		t.Cleanup(func() { c.Close() })
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := c.ReadMessage(); err != nil { // hello
			t.Fatalf("hello: %v", err)
		}
	}
	return c, resp, err
}

func expectPolicyClose(t *testing.T, c *websocket.Conn) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		if !websocket.IsCloseError(err, websocket.ClosePolicyViolation) {
			t.Fatalf("WebSocket ended with %v, want close 1008", err)
		}
		return
	}
}

func TestUserTokensRoutes(t *testing.T) {
	base := swapdtest.Start(t, nil).HTTP
	u := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"dana"}`)
	tok0, _ := u.body["token"].(string)
	a := call(t, "POST", base+"/api/admin/users/dana/tokens", adminToken, "")
	tok1, _ := a.body["token"].(string)
	id1, _ := a.body["id"].(string)
	if a.status != http.StatusCreated || tok1 == "" || tok1 == tok0 || !strings.HasPrefix(id1, "tk-") || a.body["user_id"] != "dana" {
		t.Fatalf("add token: %d %s", a.status, a.raw)
	}
	var sockets []*websocket.Conn
	for _, tok := range []string{tok0, tok1} {
		if a := call(t, "GET", base+"/api/bookings", tok, ""); a.status != 200 {
			t.Fatalf("token before revocation: %d %s", a.status, a.raw)
		}
		c, _, err := dialNotifications(t, base, tok)
		if err != nil {
			t.Fatal(err)
		}
		sockets = append(sockets, c)
	}
	other := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"erin"}`).body

	if a := call(t, "DELETE", base+"/api/admin/users/dana/tokens", adminToken, ""); a.status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", a.status, a.raw)
	}
	for _, c := range sockets {
		expectPolicyClose(t, c)
	}
	for _, tok := range []string{tok0, tok1} {
		if a := call(t, "GET", base+"/api/bookings", tok, ""); a.status != http.StatusUnauthorized {
			t.Errorf("revoked token: %d %s", a.status, a.raw)
		}
		if _, resp, err := dialNotifications(t, base, tok); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("WebSocket with a revoked token: %v", err)
		}
	}
	if tok, _ := other["token"].(string); call(t, "GET", base+"/api/bookings", tok, "").status != 200 {
		t.Error("another user's token stopped working")
	}
	// The user stays and can be given a new token.
	a = call(t, "POST", base+"/api/admin/users/dana/tokens", adminToken, "")
	if tok2, _ := a.body["token"].(string); a.status != http.StatusCreated || call(t, "GET", base+"/api/bookings", tok2, "").status != 200 {
		t.Errorf("new token after revocation: %d %s", a.status, a.raw)
	}
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"POST", "/api/admin/users/nobody/tokens", 404, "user_not_found"},
		{"DELETE", "/api/admin/users/nobody/tokens", 404, "user_not_found"},
		{"POST", "/api/admin/users/b%21d/tokens", 400, "invalid_id"},
		{"DELETE", "/api/admin/users/b%21d/tokens", 400, "invalid_id"},
	} {
		if a := call(t, tc.method, base+tc.path, adminToken, ""); a.status != tc.status || code(a) != tc.code {
			t.Errorf("%s %s: %d %s, want %d %s", tc.method, tc.path, a.status, a.raw, tc.status, tc.code)
		}
	}
}

func TestDeleteUserRoute(t *testing.T) {
	base := swapdtest.Start(t, nil).HTTP
	u := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"dana"}`)
	tok, _ := u.body["token"].(string)
	c, _, err := dialNotifications(t, base, tok)
	if err != nil {
		t.Fatal(err)
	}
	if a := call(t, "DELETE", base+"/api/admin/users/dana", adminToken, ""); a.status != http.StatusNoContent {
		t.Fatalf("delete user: %d %s", a.status, a.raw)
	}
	expectPolicyClose(t, c)
	if a := call(t, "GET", base+"/api/bookings", tok, ""); a.status != http.StatusUnauthorized {
		t.Errorf("token of a deleted user: %d", a.status)
	}
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"DELETE", "/api/admin/users/dana", 404},
		{"POST", "/api/admin/users/dana/tokens", 404},
		{"DELETE", "/api/admin/users/b%21d", 400},
	} {
		if a := call(t, tc.method, base+tc.path, adminToken, ""); a.status != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, a.status, a.raw, tc.status)
		}
	}
	// The id can be used again.
	if a := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"dana"}`); a.status != http.StatusCreated {
		t.Errorf("re-create: %d %s", a.status, a.raw)
	}
}

// onlineStation provisions st-1 with two ready batteries, logs it in,
// reports them and returns the commands it receives.
func onlineStation(t *testing.T, base, mq string) chan map[string]any {
	t.Helper()
	secret := provision(t, base, "st-1")
	c, _ := mustLogin(t, mq, "st-1", secret)
	cmds := make(chan map[string]any, 16)
	tok := c.Subscribe("swap/v1/stations/st-1/cmd", 1, func(_ paho.Client, m paho.Message) {
		var cmd map[string]any
		if json.Unmarshal(m.Payload(), &cmd) == nil {
			select {
			case cmds <- cmd:
			default:
			}
		}
	})
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	alive(t, c, "st-1", "status")
	slot := func(n int, bat string) string {
		return fmt.Sprintf(`{"slot":%d,"battery_id":%q,"soc":95,"soh":98,"temp_c":25,"voltage_v":52,"charging":false,"door":"closed","locked":true,"fault":""}`, n, bat)
	}
	tele := fmt.Sprintf(`{"boot_id":"b1","seq":1,"ts":"%s","full":true,"slots":[%s,%s,%s,%s]}`,
		time.Now().UTC().Format(time.RFC3339), slot(1, "B-1"), slot(2, "B-2"),
		`{"slot":3,"battery_id":null,"door":"closed","locked":true}`, `{"slot":4,"battery_id":null,"door":"closed","locked":true}`)
	pt := c.Publish("swap/v1/stations/st-1/telemetry", 1, false, tele)
	if !pt.WaitTimeout(10*time.Second) || pt.Error() != nil {
		t.Fatalf("telemetry: %v", pt.Error())
	}
	return cmds
}

func nextCmd(t *testing.T, cmds chan map[string]any, action string) map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case c := <-cmds:
			if c["action"] == action {
				return c
			}
		case <-deadline:
			t.Fatalf("no %s command", action)
			return nil
		}
	}
}

func book(t *testing.T, base, tok string) string {
	t.Helper()
	a := call(t, "POST", base+"/api/bookings", tok, `{"station_id":"st-1"}`)
	if a.status != http.StatusCreated {
		t.Fatalf("book: %d %s", a.status, a.raw)
	}
	return a.body["id"].(string)
}

func booked(t *testing.T, base string) float64 {
	t.Helper()
	a := call(t, "GET", base+"/api/stations/st-1", "", "")
	n, _ := a.body["booked_batteries"].(float64)
	return n
}

// Deleting a user cancels its active bookings through the normal path: the
// station is told to release the slot and the battery is bookable again.
func TestDeleteUserCancelsBookings(t *testing.T) {
	sd := swapdtest.Start(t, nil)
	base, mq := sd.HTTP, sd.MQTT
	cmds := onlineStation(t, base, mq)
	u := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"dana"}`)
	id := book(t, base, u.body["token"].(string))
	nextCmd(t, cmds, "reserve")
	if n := booked(t, base); n != 1 {
		t.Fatalf("booked %v, want 1", n)
	}
	if a := call(t, "DELETE", base+"/api/admin/users/dana", adminToken, ""); a.status != http.StatusNoContent {
		t.Fatalf("delete user: %d %s", a.status, a.raw)
	}
	if rel := nextCmd(t, cmds, "release"); rel["booking_id"] != id {
		t.Errorf("release %v, want booking %s", rel, id)
	}
	if n := booked(t, base); n != 0 {
		t.Errorf("booked %v after the delete, want 0", n)
	}
}

// Deleting a station fails its active bookings, and each user is told on
// its notifications WebSocket.
func TestDeleteStationNotifiesUsers(t *testing.T) {
	sd := swapdtest.Start(t, nil)
	base, mq := sd.HTTP, sd.MQTT
	cmds := onlineStation(t, base, mq)
	u := call(t, "POST", base+"/api/admin/users", adminToken, `{"id":"dana"}`)
	tok := u.body["token"].(string)
	ws, _, err := dialNotifications(t, base, tok)
	if err != nil {
		t.Fatal(err)
	}
	id := book(t, base, tok)
	nextCmd(t, cmds, "reserve")
	if a := call(t, "DELETE", base+"/api/admin/stations/st-1", adminToken, ""); a.status != http.StatusNoContent {
		t.Fatalf("delete station: %d %s", a.status, a.raw)
	}
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("no notification of the failed booking: %v", err)
		}
		var m map[string]any
		if json.Unmarshal(data, &m) == nil && m["type"] == "notification" && m["booking_id"] == id {
			if m["level"] != "warning" {
				t.Errorf("notification %s, want level warning", data)
			}
			break
		}
	}
	a := call(t, "GET", base+"/api/bookings", tok, "")
	bks, _ := a.body["bookings"].([]any)
	if len(bks) != 1 || bks[0].(map[string]any)["status"] != "failed" {
		t.Errorf("bookings after the station's delete: %s", a.raw)
	}
}
