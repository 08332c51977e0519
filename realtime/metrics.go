package realtime

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/swapbridge/swapbridge/store"
)

type metrics struct {
	connsByKind [3]prometheus.Gauge // stations, station, user
	framesSent  prometheus.Counter
	slowCloses  prometheus.Counter
	queueDepth  prometheus.Histogram
	resumes     *prometheus.CounterVec
	// replayBounded counts resumes answered with a snapshot because since
	// was more than Config.MaxReplay behind.
	replayBounded prometheus.Counter
	rejected      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	conns := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "swapd_ws_connections",
		Help: "Open WebSocket connections by channel kind (stations, station, user).",
	}, []string{"channel"})
	m := &metrics{
		framesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_ws_frames_sent_total",
			Help: "WebSocket text frames written to clients.",
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
	for _, c := range []prometheus.Collector{conns, m.framesSent, m.slowCloses, m.queueDepth, m.resumes, m.replayBounded, m.rejected} {
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
