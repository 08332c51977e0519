package realtime

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/store"
)

type metrics struct {
	connsByKind [3]prometheus.Gauge // stations, station, user
	framesSent  prometheus.Counter
	// framesEncoded counts committed events framed for the fan-out: once
	// per event that has a recipient, however many it has.
	framesEncoded   prometheus.Counter
	fanoutOverflows prometheus.Counter
	slowCloses      prometheus.Counter
	queueDepth      prometheus.Histogram
	resumes         *prometheus.CounterVec
	// replayBounded counts resumes answered with a snapshot because since
	// was more than Config.MaxReplay behind.
	replayBounded prometheus.Counter
	rejected      *prometheus.CounterVec
}

// newMetrics creates the hub's metrics; queued reports the fan-out's
// queue depth when scraped.
func newMetrics(reg prometheus.Registerer, queued func() float64) (*metrics, error) {
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "swapd_ws_fanout_queue",
		Help: "Committed events (one per channel) waiting for the hub's fan-out shards.",
	}, queued)
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "swapd_ws_connections",
		Help: "Open WebSocket connections by channel kind (stations, station, user).",
	}, []string{"channel"})
	m := &metrics{
		framesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_frames_sent_total",
			Help: "WebSocket text frames written to clients.",
		}),
		framesEncoded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_frames_encoded_total",
			Help: "Committed events framed for the fan-out (once per event, shared by all its recipients).",
		}),
		fanoutOverflows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_fanout_overflows_total",
			Help: "Times a fan-out shard fell more than its queue bound behind: its queued events were dropped and its connections closed with 1013.",
		}),
		slowCloses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_slow_client_closes_total",
			Help: "Connections closed because their send queue overflowed.",
		}),
		queueDepth: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "swapd_ws_queue_depth",
			Help:    "Frames taken from a connection's queue per write.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 7),
		}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swapd_ws_resumes_total",
			Help: "Connections opened with ?since=, by whether the missed events could be replayed.",
		}, []string{"recovered"}),
		replayBounded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_replays_bounded_total",
			Help: "Resumes answered with recovered:false and a snapshot because since was more than the replay bound behind the newest event.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "swapd_ws_rejected_total",
			Help: "WebSocket requests refused before the upgrade, by error code.",
		}, []string{"code"}),
	}
	for i, k := range []string{"stations", "station", "user"} {
		m.connsByKind[i] = conns.WithLabelValues(k)
	}
	m.resumes.WithLabelValues("true")
	m.resumes.WithLabelValues("false")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{conns, queue, m.framesSent, m.framesEncoded, m.fanoutOverflows, m.slowCloses, m.queueDepth, m.resumes, m.replayBounded, m.rejected} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, errors.New("realtime: metrics already registered (one Hub per registry)")
			}
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) conns(k store.ChannelKind) prometheus.Gauge {
	switch k {
	case store.OneStation:
		return m.connsByKind[1]
	case store.OneUser:
		return m.connsByKind[2]
	}
	return m.connsByKind[0]
}
