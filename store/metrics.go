package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// storeMetrics are the committer's Prometheus metrics.
type storeMetrics struct {
	duration prometheus.Histogram
	batch    prometheus.Histogram
}

func newStoreMetrics(reg prometheus.Registerer) (*storeMetrics, error) {
	m := &storeMetrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "swapd_store_commit_duration_seconds",
			Help:    "Time of one group commit, from the transaction's begin to its fsync'd commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16), // 100µs … 3.3s
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "swapd_store_commit_batch_size",
			Help:    "Requests (station commits, Updates) sharing one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 13), // 1 … 4096
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.duration, m.batch} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *storeMetrics) observe(d time.Duration, n int) {
	m.duration.Observe(d.Seconds())
	m.batch.Observe(float64(n))
}
