package stationagent

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/auth"

	"github.com/swapbridge/swapbridge/internal/mqtttest"
	"github.com/swapbridge/swapbridge/internal/testwait"
)

// recordHandler sends every log record to a channel.
type recordHandler struct{ ch chan slog.Record }

func (h recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recordHandler) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.ch <- r.Clone():
	default:
	}
	return nil
}
func (h recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h recordHandler) WithGroup(string) slog.Handler      { return h }

func attr(r slog.Record, key string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// TestWrongSecretHintsOnceAndRetriesSlowly: a broker that refuses the
// station's secret gets the hint logged once, however often the agent
// retries, and the agent retries at ReconnectMax (jittered), not at
// ReconnectMin; once the broker accepts the secret, the agent connects.
func TestWrongSecretHintsOnceAndRetriesSlowly(t *testing.T) {
	ledger := &auth.Ledger{
		Auth: auth.AuthRules{{Username: "st-1", Password: "the-right-one", Allow: true}},
		ACL:  auth.ACLRules{{Client: "*"}},
	}
	mb := mqtttest.StartBroker(t, "", ledger, nil)

	cfg := testConfig(t, mb.URL(), t.TempDir())
	cfg.Secret = "a-wrong-one"
	cfg.ReconnectMin = time.Millisecond
	cfg.ReconnectMax = 200 * time.Millisecond
	logs := make(chan slog.Record, 1000)
	r := startAgent(t, cfg, WithLogger(slog.New(recordHandler{logs})))

	hints, refusals := 0, 0
	deadline := time.After(10 * time.Second)
	for refusals < 3 {
		select {
		case rec := <-logs:
			switch rec.Message {
			case "mqtt credentials refused":
				hints++
				h := attr(rec, "hint").String()
				for _, want := range []string{"station_id", "client id and username", "swapctl station add", "swapctl station rotate", "server"} {
					if !strings.Contains(h, want) {
						t.Errorf("hint %q does not mention %q", h, want)
					}
				}
				if got := attr(rec, "station_id").String(); got != "st-1" {
					t.Errorf("hint for station %q, want st-1", got)
				}
			case "mqtt disconnected":
				refusals++
				if !strings.Contains(attr(rec, "err").String(), "not Authorized") {
					t.Fatalf("disconnected for %v, want a refusal", attr(rec, "err"))
				}
				if d := attr(rec, "retry_in").Duration(); d < cfg.ReconnectMax/2 || d > cfg.ReconnectMax {
					t.Errorf("refused attempt %d retries in %v, want between %v and %v", refusals, d, cfg.ReconnectMax/2, cfg.ReconnectMax)
				}
			case "mqtt connected":
				t.Fatal("connected with a wrong secret")
			}
		case <-deadline:
			t.Fatalf("saw %d refusals in 10s, want 3", refusals)
		}
	}
	if hints != 1 {
		t.Errorf("hint logged %d times over %d refusals, want once", hints, refusals)
	}

	// The operator fixes it on the server side: the next slow retry gets in.
	ledger.Update(&auth.Ledger{
		Auth: auth.AuthRules{{Username: "st-1", Password: "a-wrong-one", Allow: true}},
		ACL:  auth.ACLRules{{Client: "*"}},
	})
	testwait.For(t, testwait.Timeout, "the agent connected with the accepted secret", func() bool { return r.A.Status().Connected })
}
