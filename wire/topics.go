package wire

import "strings"

// TopicPrefix is the root of every station topic.
const TopicPrefix = "swap/v1/stations/"

// MaxPayload is the largest MQTT payload the contract allows (64 KiB).
const MaxPayload = 64 << 10

// TopicKind is the last level of a station topic.
type TopicKind string

// The four station topics.
const (
	KindStatus    TopicKind = "status"
	KindTelemetry TopicKind = "telemetry"
	KindCmd       TopicKind = "cmd"
	KindAck       TopicKind = "ack"
)

// Topic returns swap/v1/stations/{sid}/{kind}.
func Topic(sid string, kind TopicKind) string {
	return TopicPrefix + sid + "/" + string(kind)
}

// ParseTopic splits a station topic into its station id and kind. ok is false
// for anything that is not exactly swap/v1/stations/{valid sid}/{known kind}.
// It does not allocate.
func ParseTopic(topic string) (sid string, kind TopicKind, ok bool) {
	rest, found := strings.CutPrefix(topic, TopicPrefix)
	if !found {
		return "", "", false
	}
	i := strings.IndexByte(rest, '/')
	if i <= 0 {
		return "", "", false
	}
	sid, k := rest[:i], TopicKind(rest[i+1:])
	switch k {
	case KindStatus, KindTelemetry, KindCmd, KindAck:
	default:
		return "", "", false
	}
	if !ValidID(sid) {
		return "", "", false
	}
	return sid, k, true
}
