package bench

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestHistogramQuantilesWithinBucketError(t *testing.T) {
	var h Histogram
	vals := make([]time.Duration, 0, 100000)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 100000; i++ {
		// log-uniform from 1µs to ~1s
		v := time.Duration(float64(time.Microsecond) * float64(int(1)<<r.IntN(20)) * (1 + r.Float64()))
		vals = append(vals, v)
		h.Record(v)
	}
	slices.Sort(vals)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		want := vals[int(q*float64(len(vals)))-1]
		got := h.Quantile(q)
		if rel := float64(got-want) / float64(want); rel > 0.02 || rel < -0.02 {
			t.Errorf("q%.3f: got %v, want %v (±2%%)", q, got, want)
		}
	}
	if h.Max() != vals[len(vals)-1].Truncate(time.Microsecond) {
		t.Errorf("max %v, want %v", h.Max(), vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count %d, want %d", h.Count(), len(vals))
	}
}

func TestHistogramEdges(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 || h.Summary().Count != 0 {
		t.Fatal("an empty histogram reports zero")
	}
	h.Record(-time.Second) // clock skew between processes
	h.Record(0)
	h.Record(100 * 24 * time.Hour) // beyond the range: the last bucket
	if h.Count() != 3 {
		t.Fatalf("count %d", h.Count())
	}
	if h.Quantile(0.5) != 0 {
		t.Errorf("median of {0,0,huge} = %v", h.Quantile(0.5))
	}
	if got := h.Quantile(1); got <= 0 {
		t.Errorf("top quantile %v must be positive", got)
	}
	for i := 0; i < histBuckets; i++ {
		if histIndex(uint64(histValue(i))) != i {
			t.Fatalf("bucket %d: its middle %v maps to bucket %d", i, histValue(i), histIndex(uint64(histValue(i))))
		}
	}
}

func TestHistogramConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				h.Record(time.Duration(i) * time.Microsecond)
			}
		}()
	}
	wg.Wait()
	if h.Count() != 8000 || h.Max() != 999*time.Microsecond {
		t.Fatalf("count %d max %v", h.Count(), h.Max())
	}
}

func TestTriangleWalkChangesByOne(t *testing.T) {
	for k := 1; k <= 8; k++ {
		for s := uint64(1); s < 100; s++ {
			d := tri(s, k) - tri(s-1, k)
			if d != 1 && d != -1 {
				t.Fatalf("k=%d: step %d changes the count by %d", k, s, d)
			}
			if v := tri(s, k); v < 0 || v > k {
				t.Fatalf("k=%d: tri(%d)=%d out of range", k, s, v)
			}
		}
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	b.RunParallel(func(pb *testing.PB) {
		d := time.Duration(0)
		for pb.Next() {
			d += 997 * time.Nanosecond
			h.Record(d % time.Second)
		}
	})
}
