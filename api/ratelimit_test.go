package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/wire"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestIPLimiterBucket(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l, err := NewIPLimiter(RateLimit{Rate: 10, Burst: 5, Clock: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, after := l.Allow("a")
	if ok || after <= 0 || after > 100*time.Millisecond {
		t.Fatalf("6th request: ok=%v retry after %v; want refused for ≤100ms", ok, after)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Error("another address is limited too")
	}
	clk.add(100 * time.Millisecond) // one token at 10/s
	if ok, _ := l.Allow("a"); !ok {
		t.Error("no token after 100ms at 10/s")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("a second token after 100ms at 10/s")
	}
	clk.add(time.Hour)
	for i := range 5 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("after a long pause, request %d refused: the bucket must refill to the burst", i+1)
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Error("the bucket refilled beyond the burst")
	}
}

func TestIPLimiterBoundedMemory(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l, _ := NewIPLimiter(RateLimit{Rate: 1, Burst: 2, MaxTracked: 100, Clock: clk.now})
	for i := range 1000 {
		l.Allow(fmt.Sprintf("10.0.%d.%d", i/256, i%256))
		if n := l.Tracked(); n > 100 {
			t.Fatalf("%d addresses tracked, bound is 100", n)
		}
	}
	// Addresses whose bucket refilled are forgotten first.
	clk.add(time.Minute)
	l.Allow("fresh")
	if n := l.Tracked(); n != 1 {
		t.Errorf("after every bucket refilled, a new address left %d tracked, want 1", n)
	}
}

func TestIPLimiterDisabledAndWrap(t *testing.T) {
	if l, err := NewIPLimiter(RateLimit{Rate: -1}); l != nil || err != nil {
		t.Fatalf("negative rate: %v %v, want a nil limiter", l, err)
	}
	var nilL *IPLimiter
	if ok, _ := nilL.Allow("x"); !ok {
		t.Error("nil limiter refused")
	}
	reg := prometheus.NewRegistry()
	clk := &fakeClock{t: time.Unix(1_000_000, 0)}
	l, err := NewIPLimiter(RateLimit{Rate: 1, Burst: 2, Clock: clk.now, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	served := 0
	h := l.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	do := func(remote string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/api/stations", nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	do("192.0.2.1:1000")
	do("192.0.2.1:1001") // another port, same address
	w := do("192.0.2.1:1002")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("3rd request: %d Retry-After %q, want 429 and 1", w.Code, w.Header().Get("Retry-After"))
	}
	var eb wire.ErrorBody
	if json.Unmarshal(w.Body.Bytes(), &eb) != nil || eb.Error.Code != "rate_limited" || eb.Error.Message == "" {
		t.Errorf("429 body %s", w.Body)
	}
	if w := do("[2001:db8::1]:5"); w.Code != http.StatusOK {
		t.Errorf("another address: %d", w.Code)
	}
	if served != 3 {
		t.Errorf("handler ran %d times, want 3", served)
	}
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "swapd_http_rate_limited_total" || mfs[0].GetMetric()[0].GetCounter().GetValue() != 1 {
		t.Errorf("metrics %v %v, want swapd_http_rate_limited_total 1", mfs, err)
	}
}
