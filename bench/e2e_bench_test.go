package bench

import (
	"context"
	"sync"
	"testing"
	"time"
)

// benchServer starts an in-process swapd with n connected stations and one
// WebSocket client on every station (kind wsAll) or on the first (wsStation).
func benchServer(b *testing.B, n int, kind wsKind) *runner {
	b.Helper()
	cfg := Defaults(Steady)
	cfg.Embedded, cfg.Slots, cfg.noPublishLimit = true, 12, true
	ctx := context.Background()
	tgt, err := openTarget(ctx, &cfg, false)
	if err != nil {
		b.Fatal(err)
	}
	r := newRunner(cfg, tgt, "e2e"+randomHex(2))
	b.Cleanup(func() {
		r.closeAll()
		tgt.closeFn()
	})
	if err := r.provision(ctx, n, 8, 60); err != nil {
		b.Fatal(err)
	}
	if err := r.connectAll(ctx); err != nil {
		b.Fatal(err)
	}
	c, err := r.dialWS(ctx, kind, r.stations[0], nil)
	if err != nil {
		b.Fatal(err)
	}
	r.ws = []*wsClient{c}
	return r
}

// BenchmarkPublishToFrame is one station's telemetry through the whole
// server, one message at a time: MQTT publish → auth/ACL → bridge → store
// commit (fsync) → hub → WebSocket frame, measured from the telemetry's own
// ts to the frame's arrival.
func BenchmarkPublishToFrame(b *testing.B) {
	r := benchServer(b, 1, wsStation)
	r.notify = make(chan struct{}, 1)
	st := r.stations[0]
	st.ackNotify = make(chan struct{}, 1)
	lat := new(Histogram)
	r.lat.Store(lat)
	b.ResetTimer()
	for b.Loop() {
		if err := st.sendStep(1); err != nil {
			b.Fatal(err)
		}
		// The frame and the PUBACK, in either order.
		for _, ch := range []chan struct{}{r.notify, st.ackNotify} {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				b.Fatal("no frame or PUBACK within 10s")
			}
		}
	}
	b.ReportMetric(float64(lat.Quantile(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat.Quantile(0.99).Microseconds()), "p99-µs")
}

// BenchmarkTelemetryThroughput runs 64 stations, each with one message in
// flight (publish, wait for the PUBACK, repeat), and one /ws/stations/
// client; it reports persisted-and-delivered messages per second.
func BenchmarkTelemetryThroughput(b *testing.B) {
	const n = 64
	r := benchServer(b, n, wsAll)
	lat := new(Histogram)
	r.lat.Store(lat)
	for _, st := range r.stations {
		st.ackNotify = make(chan struct{}, 1)
	}
	per := make([]int, n)
	for i := 0; i < b.N; i++ {
		per[i%n]++
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for i, st := range r.stations {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < per[i]; k++ {
				if err := st.sendStep(1); err != nil {
					b.Error(err)
					return
				}
				select {
				case <-st.ackNotify:
				case <-time.After(10 * time.Second):
					b.Error("no PUBACK within 10s")
					return
				}
			}
		}()
	}
	wg.Wait()
	if !waitFor(context.Background(), 10*time.Second, func() bool { return r.ws[0].delivered.Load() >= uint64(b.N) }) {
		b.Fatalf("delivered %d of %d", r.ws[0].delivered.Load(), b.N)
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(lat.Quantile(0.99).Microseconds()), "p99-µs")
}
