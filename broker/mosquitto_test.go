package broker

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/wire"
)

// TestMosquittoClients drives the broker with Debian's mosquitto-clients,
// as the README tells a newcomer to do by hand.
func TestMosquittoClients(t *testing.T) {
	pub, err := exec.LookPath("mosquitto_pub")
	if err != nil {
		t.Skip("mosquitto_pub not installed (Debian package mosquitto-clients); skipping the mosquitto client test")
	}
	sub, err := exec.LookPath("mosquitto_sub")
	if err != nil {
		t.Skip("mosquitto_sub not installed (Debian package mosquitto-clients); skipping the mosquitto client test")
	}
	rec := newRecorder()
	b := startBroker(t, Config{}, newCreds("S1", "one", "S2", "two"), rec)
	host, port, _ := net.SplitHostPort(b.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	run := func(bin string, args ...string) (string, error) {
		base := []string{"-h", host, "-p", port, "-i", "S1", "-u", "S1", "-P", "one"}
		out, err := exec.CommandContext(ctx, bin, append(base, args...)...).CombinedOutput()
		return string(out), err
	}

	// Its own telemetry: accepted and handed to the handler.
	for _, v := range []string{"mqttv311", "mqttv5"} {
		out, err := run(pub, "-V", v, "-q", "1", "-t", wire.Topic("S1", wire.KindTelemetry), "-m", `{"seq":1}`)
		if err != nil {
			t.Fatalf("%s publish to own telemetry: %v: %s", v, err, out)
		}
		rec.expect(t, "up", "S1", "", "")
		rec.expect(t, "publish", "S1", wire.KindTelemetry, `{"seq":1}`)
		rec.expect(t, "down", "S1", "", "")
	}

	// Another station's telemetry: refused, and never reaches the handler.
	for _, v := range []string{"mqttv311", "mqttv5"} {
		before := value(t, b.m.pubDenied)
		out, err := run(pub, "-V", v, "-q", "1", "-t", wire.Topic("S2", wire.KindTelemetry), "-m", `{"seq":1}`)
		t.Logf("%s publish to S2's telemetry: err=%v output=%q", v, err, out)
		switch v {
		case "mqttv311": // the connection is closed
			if err == nil || !strings.Contains(out, "connection was lost") {
				t.Errorf("%s: err %v, output %q; want the connection closed", v, err, out)
			}
		case "mqttv5": // PUBACK "not authorized"
			if !strings.Contains(out, "Not authorized") {
				t.Errorf("%s: output %q; want not authorized", v, out)
			}
		}
		rec.expect(t, "up", "S1", "", "")
		rec.expect(t, "down", "S1", "", "") // no publish between up and down
		if got := value(t, b.m.pubDenied); got != before+1 {
			t.Errorf("%s: publishes_denied_total = %v, want %v", v, got, before+1)
		}
	}

	// Subscribing to another station's cmd is refused.
	before := value(t, b.m.subDenied)
	out, err := run(sub, "-V", "mqttv311", "-t", wire.Topic("S2", wire.KindCmd), "-C", "1", "-W", "5")
	t.Logf("subscribe to S2's cmd: err=%v output=%q", err, out)
	if !strings.Contains(out, "denied") {
		t.Errorf("mosquitto_sub on another station's cmd: output %q does not say denied", out)
	}
	if got := value(t, b.m.subDenied); got != before+1 {
		t.Errorf("subscribes_denied_total = %v, want %v", got, before+1)
	}

	// Wrong secret: CONNACK refusal.
	raw, err := exec.CommandContext(ctx, pub, "-h", host, "-p", port, "-i", "S1", "-u", "S1", "-P", "wrong",
		"-t", wire.Topic("S1", wire.KindTelemetry), "-m", "{}").CombinedOutput()
	out = string(raw)
	if err == nil || !strings.Contains(out, "not authorised") {
		t.Errorf("mosquitto_pub with a wrong secret: err %v, output %q", err, out)
	}
	t.Logf("wrong secret: err=%v output=%q", err, out)
}
