package broker

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a CONNECT is refused (label "reason" of
// swapd_broker_connects_refused_total).
const (
	ReasonClientIDMismatch = "client_id_mismatch" // client id ≠ username
	ReasonInvalidID        = "invalid_id"         // not a valid station id
	ReasonReservedID       = "reserved_id"        // the broker's own inline client id
	ReasonNoPassword       = "no_password"
	ReasonUnknownStation   = "unknown_station"
	ReasonBadSecret        = "bad_secret"
	ReasonStoreError       = "store_error"
	ReasonWillDenied       = "will_denied"       // Will topic outside the station's own publish topics, or too large
	ReasonTooManyFailures  = "too_many_failures" // the remote address is blocked after repeated failed CONNECTs
)

var refuseReasons = []string{
	ReasonClientIDMismatch, ReasonInvalidID, ReasonReservedID, ReasonNoPassword,
	ReasonUnknownStation, ReasonBadSecret, ReasonStoreError, ReasonWillDenied, ReasonTooManyFailures,
}

type metrics struct {
	refused       map[string]prometheus.Counter // by reason; read-only after newMetrics
	pubDenied     prometheus.Counter
	subDenied     prometheus.Counter
	oversized     prometheus.Counter
	handlerErrors prometheus.Counter
	badPayloads   prometheus.Counter
	rateLimited   prometheus.Counter
	connected     prometheus.Gauge
}

// newMetrics builds the broker's collectors and registers them with reg
// when it is not nil. Label children are created up front so that counting
// never allocates.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "swapd", Subsystem: "broker", Name: "connects_refused_total",
		Help: "MQTT CONNECTs refused, by reason.",
	}, []string{"reason"})
	m := &metrics{
		refused: make(map[string]prometheus.Counter, len(refuseReasons)),
		pubDenied: counter("publishes_denied_total",
			"MQTT publishes denied by the station ACL."),
		subDenied: counter("subscribes_denied_total",
			"MQTT subscriptions (and deliveries) denied by the station ACL."),
		oversized: counter("packets_oversized_total",
			"MQTT packets or payloads refused for their size; the connection is closed."),
		handlerErrors: counter("handler_errors_total",
			"Station publishes the handler failed; the publish was not acknowledged and the station disconnected."),
		badPayloads: counter("payloads_rejected_total",
			"Station publishes whose payload is malformed; acknowledged (MQTT 5: reason 0x99) and dropped, the connection stays up."),
		rateLimited: counter("publishes_rate_limited_total",
			"Station publishes over the per-station rate that could not wait their turn; the station was disconnected without PUBACK."),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "swapd", Subsystem: "broker", Name: "stations_connected",
			Help: "Stations with a live MQTT connection.",
		}),
	}
	for _, r := range refuseReasons {
		m.refused[r] = refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{refused, m.pubDenied, m.subDenied, m.oversized, m.handlerErrors, m.badPayloads, m.rateLimited, m.connected}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("broker: register metrics: %w", err)
		}
	}
	return m, nil
}

// counter is a swapd_broker_… counter.
func counter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "swapd", Subsystem: "broker", Name: name, Help: help})
}
