package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram is a concurrent, HDR-style latency histogram: values are
// recorded in microseconds into log-linear buckets (64 sub-buckets per power
// of two, so every reported value is within 1.6% of the true one) from 1 µs
// to about 12 days. Record is lock-free and safe from any goroutine.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // µs
	max    atomic.Uint64 // µs
}

const (
	histSubBits = 7 // 128 linear buckets below 128 µs, then 64 per octave
	histSub     = 1 << histSubBits
	histHalf    = histSub / 2
	histOctaves = 34
	histBuckets = histSub + histOctaves*histHalf
)

func histIndex(us uint64) int {
	if us < histSub {
		return int(us)
	}
	e := bits.Len64(us) - histSubBits // ≥ 1
	if e > histOctaves {
		return histBuckets - 1
	}
	m := us >> uint(e) // 64..127
	return histSub + (e-1)*histHalf + int(m-histHalf)
}

// histValue returns the middle of bucket i, in µs.
func histValue(i int) float64 {
	if i < histSub {
		return float64(i)
	}
	e := (i-histSub)/histHalf + 1
	m := uint64((i-histSub)%histHalf + histHalf)
	lo := m << uint(e)
	hi := (m+1)<<uint(e) - 1
	return (float64(lo) + float64(hi)) / 2
}

// Record adds one duration; negative durations (clock skew between
// processes) count as zero.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[histIndex(us)].Add(1)
	h.n.Add(1)
	h.sum.Add(us)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the value at quantile q (0..1), 0 when empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	if rank == 0 {
		rank = 1
	}
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			v := histValue(i)
			if mx := float64(h.max.Load()); v > mx {
				v = mx
			}
			return time.Duration(v * float64(time.Microsecond))
		}
	}
	return h.Max()
}

// Max returns the largest recorded value.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max.Load()) * time.Microsecond }

// Mean returns the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	return time.Duration(h.sum.Load()/n) * time.Microsecond
}

// Latency is a histogram summary in milliseconds, as printed and written to
// --json.
type Latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// Summary returns the histogram's percentiles.
func (h *Histogram) Summary() Latency {
	ms := func(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }
	return Latency{
		Count: h.Count(),
		P50:   ms(h.Quantile(0.50)),
		P90:   ms(h.Quantile(0.90)),
		P99:   ms(h.Quantile(0.99)),
		P999:  ms(h.Quantile(0.999)),
		Max:   ms(h.Max()),
		Mean:  ms(h.Mean()),
	}
}
