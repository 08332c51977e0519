package reliability

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/wire"
)

// TestHTTPAndWebSocketPerAddressLimit: past the burst, one address gets
// 429 with Retry-After on the API and on WebSocket upgrades, and the
// refused requests change nothing.
func TestHTTPAndWebSocketPerAddressLimit(t *testing.T) {
	p := swapdtest.Start(t, func(c *server.Config) {
		c.Limits.HTTPRate = 0.01 // one token per 100s: no refill during the test
		c.Limits.HTTPBurst = 6
	})
	provision(t, p.Admin, 2, "RL-1") // 1 request
	before := fingerprint(t, p)
	codes := []int{}
	for range 4 {
		resp, err := http.Get(p.HTTP + "/api/stations")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.HTTP, "http")+"/ws/stations/", nil)
	if err != nil {
		t.Fatalf("WebSocket within the burst: %v", err)
	}
	ws.Close()
	// The burst of 6 is spent: API calls and upgrades are refused.
	resp, err := http.Post(p.HTTP+"/api/admin/users", "application/json", strings.NewReader(`{"id":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("request past the burst: %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	_, wresp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.HTTP, "http")+"/ws/stations/", nil)
	if err == nil || wresp == nil || wresp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("WebSocket upgrade past the burst: %v, want 429", err)
	}
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d within the burst: %d", i+2, c)
		}
	}
	if fingerprint(t, p) != before {
		t.Error("refused requests changed the state")
	}
}

// TestMQTTMaxClients: with limits.mqtt_max_clients connections open, the
// next station is refused with "server unavailable" until one leaves.
func TestMQTTMaxClients(t *testing.T) {
	p := swapdtest.Start(t, func(c *server.Config) { c.Limits.MQTTMaxClients = 2 })
	secrets := provision(t, p.Admin, 2, "MC-1", "MC-2", "MC-3")
	s1, err := dialStation(p.MQTT, "MC-1", secrets["MC-1"], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s1.close()
	s2, err := dialStation(p.MQTT, "MC-2", secrets["MC-2"], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dialStation(p.MQTT, "MC-3", secrets["MC-3"], nil); err == nil || !strings.Contains(strings.ToLower(err.Error()), "unavailable") {
		t.Fatalf("third connection: %v, want server unavailable", err)
	}
	s2.close()
	testwait.For(t, 10*time.Second, "a free connection slot", func() bool {
		s3, err := dialStation(p.MQTT, "MC-3", secrets["MC-3"], nil)
		if err != nil {
			return false
		}
		defer s3.close()
		return s3.publish(wire.KindStatus, []byte(`{"online":true,"boot_id":"b"}`), true) == nil
	})
}

// TestMQTTFailedLoginsBlocked: through swapd's config, repeated wrong
// secrets for one station from one address block that station from there,
// its right secret included, while another station behind the same address
// logs in, and the refusals change nothing.
func TestMQTTFailedLoginsBlocked(t *testing.T) {
	p := swapdtest.Start(t, func(c *server.Config) {
		c.Limits.MQTTAuthFailures = 3
		c.Limits.MQTTAuthBlock = server.Duration(time.Minute)
	})
	secrets := provision(t, p.Admin, 2, "AF-1", "AF-2")
	before := fingerprint(t, p)
	for i := range 3 {
		if _, err := dialStation(p.MQTT, "AF-1", "guess-"+string(rune('a'+i)), nil); err == nil {
			t.Fatalf("guess %d accepted", i+1)
		}
	}
	if _, err := dialStation(p.MQTT, "AF-1", secrets["AF-1"], nil); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
		t.Errorf("AF-1 with the right secret after its 3 failures: %v, want refused", err)
	}
	if fingerprint(t, p) != before {
		t.Error("refused logins changed the state")
	}
	s2, err := dialStation(p.MQTT, "AF-2", secrets["AF-2"], nil)
	if err != nil {
		t.Fatalf("AF-2, a neighbour behind the same address, with its right secret: %v", err)
	}
	s2.close()
}
