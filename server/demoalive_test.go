package server

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// TestDemoStaysAlive runs the demo at 30× its normal speed for the
// equivalent of 30 minutes of a demo left running (30 simulated hours) and
// checks that its last five minutes' worth still show bookings,
// collections, returns and charging: the network never settles into
// "every battery full and nothing moves".
func TestDemoStaysAlive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for a minute")
	}
	const speedup = 30
	cfg := demoConfig(t, t.TempDir(), 6)
	cfg.Demo.Speed = DemoSpeed * speedup
	d, _ := startDemo(t, cfg)
	ws := dialWS(t, d, "/ws/stations/")

	total := 30 * time.Minute / speedup // the demo's 30 minutes
	tail := 5 * time.Minute / speedup   // and its last five
	start := time.Now()
	end := start.Add(total)
	seen := map[string]int{}     // event kind → count in the tail
	lifetime := map[string]int{} // over the whole run
	for time.Now().Before(end) {
		ws.SetReadDeadline(end)
		_, b, err := ws.ReadMessage()
		if err != nil {
			if time.Now().Before(end) {
				t.Fatalf("stations socket: %v", err)
			}
			break
		}
		var m struct {
			Type     string `json:"type"`
			Charging int    `json:"charging_batteries"`
		}
		if json.Unmarshal(b, &m) != nil {
			t.Fatalf("frame is not JSON: %s", b)
		}
		kind := m.Type
		if kind == wire.TypeInventoryUpdate {
			if m.Charging == 0 {
				continue
			}
			kind = "charging"
		}
		lifetime[kind]++
		if time.Until(end) <= tail {
			seen[kind]++
		}
	}
	t.Logf("events over the run: %v; in its last %s: %v", lifetime, tail, seen)
	for _, kind := range []string{wire.TypeBatteryBooked, wire.TypeBatteryCollected, wire.TypeBatteryAdded, "charging"} {
		if seen[kind] == 0 {
			t.Errorf("no %s in the demo's last five minutes (at ×%d: %s)", kind, speedup, tail)
		}
	}
}
