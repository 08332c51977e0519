package broker

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// fromAddr makes paho connect from the local address ip.
func fromAddr(o *paho.ClientOptions, ip string) *paho.ClientOptions {
	return o.SetDialer(&net.Dialer{Timeout: waitFor, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}})
}

func TestAuthFailuresSlowThenBlock(t *testing.T) {
	b := startBroker(t, Config{AuthFailures: 4, AuthFailWindow: time.Minute, AuthBlock: 2 * time.Second, AuthDelay: 40 * time.Millisecond},
		newCreds("S1", "one"), nil)
	try := func(ip, pass string) (time.Duration, error) {
		start := time.Now()
		c := paho.NewClient(fromAddr(stationOpts(b.Addr(), "S1", "S1", pass), ip))
		tok := c.Connect()
		if !tok.WaitTimeout(waitFor) {
			t.Fatal("connect timed out")
		}
		if tok.Error() == nil {
			c.Disconnect(0)
		}
		return time.Since(start), tok.Error()
	}
	// Failures 1–3 are refused, each later than the one before.
	for i := 1; i <= 3; i++ {
		d, err := try("127.0.0.1", "wrong")
		if err == nil {
			t.Fatalf("failure %d: wrong secret accepted", i)
		}
		if min := time.Duration(i) * 40 * time.Millisecond; d < min {
			t.Errorf("failure %d refused after %v, want at least %v", i, d, min)
		}
	}
	// The 4th blocks the address: now even the right secret is refused, and
	// counted.
	try("127.0.0.1", "wrong")
	before := value(t, b.m.refused[ReasonTooManyFailures])
	if _, err := try("127.0.0.1", "one"); err == nil || !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
		t.Fatalf("right secret from a blocked address: %v, want refused", err)
	}
	if got := value(t, b.m.refused[ReasonTooManyFailures]); got != before+1 {
		t.Errorf("too_many_failures = %v, want %v", got, before+1)
	}
	// Another address is not affected.
	if _, err := try("127.0.0.2", "one"); err != nil {
		t.Errorf("another address: %v", err)
	}
	// The block ends by itself.
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond) // polling the observable block
	defer tick.Stop()
	for {
		if _, err := try("127.0.0.1", "one"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the block did not end")
		}
		<-tick.C
	}
}

func TestAuthLimiterBounded(t *testing.T) {
	l := newAuthLimiter(3, 1000, time.Minute, time.Minute, 0)
	now := time.Unix(1e6, 0)
	for i := range maxAuthTracked + 100 {
		ip := net.IPv4(10, byte(i>>16), byte(i>>8), byte(i)).String()
		l.failed(ip, "S1", now)
		l.failed("10.255.0.1", fmt.Sprintf("S%d", i), now) // one host, many ids
	}
	if n := len(l.hosts); n > maxAuthTracked {
		t.Fatalf("%d hosts tracked, bound %d", n, maxAuthTracked)
	}
	if n := len(l.pairs); n > maxAuthTracked {
		t.Fatalf("%d (host, id) pairs tracked, bound %d", n, maxAuthTracked)
	}
	// An id that is no station id (it may be 64 KiB long) is not kept.
	l = newAuthLimiter(3, 0, time.Minute, time.Minute, 0)
	l.failed("10.0.0.1", strings.Repeat("-", 60<<10), now)
	for k := range l.pairs {
		if k.id != "" {
			t.Errorf("pair kept with an invalid id of %d bytes", len(k.id))
		}
	}
	if newAuthLimiter(-1, 0, 0, 0, 0) != nil {
		t.Error("negative AuthFailures must disable the limiter")
	}
}

func TestPublishRateLimit(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{PublishRate: 100, PublishBurst: 5}, newCreds("S1", "one", "S2", "two"), rec)
	c := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one"))
	rec.expect(t, "up", "S1", "", "")
	topic := wire.Topic("S1", wire.KindTelemetry)

	// A flood of 45: the burst of 5 passes at once, the other 40 are slowed
	// to 100/s, all acknowledged, none lost.
	start := time.Now()
	var toks []paho.Token
	for range 45 {
		toks = append(toks, c.Publish(topic, 1, false, []byte(`{"n":1}`)))
	}
	for i, tok := range toks {
		if err := wait(t, tok); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if d := time.Since(start); d < 350*time.Millisecond {
		t.Errorf("45 publishes at 100/s with a burst of 5 took %v, want ≥ 350ms", d)
	}
	for range 45 {
		rec.expect(t, "publish", "S1", wire.KindTelemetry, `{"n":1}`)
	}
	// Another station has its own budget.
	c2 := mustDial(t, stationOpts(b.Addr(), "S2", "S2", "two"))
	rec.expect(t, "up", "S2", "", "")
	start = time.Now()
	for range 5 {
		if err := wait(t, c2.Publish(wire.Topic("S2", wire.KindTelemetry), 1, false, []byte(`{}`))); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("S2's burst took %v; it must not share S1's bucket", d)
	}
	if got := value(t, b.m.rateLimited); got != 0 {
		t.Errorf("publishes_rate_limited_total = %v, want 0 (everything waited its turn)", got)
	}
}

// TestPublishRateLimitDisconnects: a publish whose turn is further away
// than PublishWait closes the connection without PUBACK.
func TestPublishRateLimitDisconnects(t *testing.T) {
	rec := newRecorder()
	b := startBroker(t, Config{PublishRate: 0.1, PublishBurst: 1, PublishWait: 50 * time.Millisecond}, newCreds("S1", "one"), rec)
	lost := make(chan error, 1)
	c := mustDial(t, stationOpts(b.Addr(), "S1", "S1", "one").SetConnectionLostHandler(notify(lost)))
	rec.expect(t, "up", "S1", "", "")
	topic := wire.Topic("S1", wire.KindTelemetry)
	if err := wait(t, c.Publish(topic, 1, false, []byte(`{"n":1}`))); err != nil {
		t.Fatal(err)
	}
	rec.expect(t, "publish", "S1", wire.KindTelemetry, `{"n":1}`)
	c.Publish(topic, 1, false, []byte(`{"n":2}`)) // its turn is 10s away
	testwait.Recv(t, lost, waitFor, "the connection closed")
	rec.expect(t, "down", "S1", "", "") // no publish reached the handler
	if got := value(t, b.m.rateLimited); got != 1 {
		t.Errorf("publishes_rate_limited_total = %v, want 1", got)
	}
}
