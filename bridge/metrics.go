package bridge

import "github.com/prometheus/client_golang/prometheus"

// bridgeMetrics are the bridge's Prometheus metrics.
type bridgeMetrics struct {
	coalesced   prometheus.Counter
	episodes    prometheus.Counter
	sendDropped prometheus.Counter
}

func newBridgeMetrics(reg prometheus.Registerer) (*bridgeMetrics, error) {
	m := &bridgeMetrics{
		coalesced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_bridge_station_events_coalesced_total",
			Help: "Per-battery events (battery_added, battery_removed without a booking) of stations over their event budget, dropped and coalesced into the station's inventory_update.",
		}),
		episodes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_bridge_station_event_budget_exceeded_total",
			Help: "Times a station ran out of its event budget (episodes; each logged once).",
		}),
		sendDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "swapd_bridge_send_queue_dropped_total",
			Help: "Commands not handed to the sender because its queue was full (persisted ones are resent by the retry timer).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.coalesced, m.episodes, m.sendDropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
