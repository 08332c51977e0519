package broker

import (
	"testing"

	"github.com/swapbridge/swapbridge/wire"
)

// BenchmarkAuthCached is the CONNECT check for a station whose hash is
// cached: id checks, SHA-256 of a 64-character secret, constant-time compare.
func BenchmarkAuthCached(b *testing.B) {
	secret := "3f6c1b0d9a8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a"
	cc := newCredCache(newCreds("station-0042", secret), errNotFound, DefaultNegativeCacheTTL)
	user, pass := []byte("station-0042"), []byte(secret)
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := cc.authenticate("station-0042", user, pass, true); r != "" {
			b.Fatal(r)
		}
	}
}

// BenchmarkAuthUnknownCached is a refused CONNECT of an unknown id answered
// from the negative cache.
func BenchmarkAuthUnknownCached(b *testing.B) {
	cc := newCredCache(newCreds(), errNotFound, DefaultNegativeCacheTTL)
	user, pass := []byte("station-9999"), []byte("whatever")
	b.ReportAllocs()
	for b.Loop() {
		if r, _ := cc.authenticate("station-9999", user, pass, true); r != ReasonUnknownStation {
			b.Fatal(r)
		}
	}
}

// BenchmarkACL is the per-packet topic check.
func BenchmarkACL(b *testing.B) {
	for _, bc := range []struct {
		name, topic string
		write, want bool
	}{
		{"publish-own-telemetry", wire.Topic("station-0042", wire.KindTelemetry), true, true},
		{"deliver-own-cmd", wire.Topic("station-0042", wire.KindCmd), false, true},
		{"publish-other-station", wire.Topic("station-0043", wire.KindTelemetry), true, false},
		{"subscribe-wildcard", "swap/v1/stations/#", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if allowed("station-0042", bc.topic, bc.write) != bc.want {
					b.Fatal("wrong ACL answer")
				}
			}
		})
	}
}

func TestACLAllocations(t *testing.T) {
	topic := wire.Topic("station-0042", wire.KindTelemetry)
	if n := testing.AllocsPerRun(100, func() { allowed("station-0042", topic, true) }); n != 0 {
		t.Errorf("ACL check allocates %v times", n)
	}
	cc := newCredCache(newCreds("S1", "one"), errNotFound, DefaultNegativeCacheTTL)
	user, pass := []byte("S1"), []byte("one")
	cc.authenticate("S1", user, pass, true)
	if n := testing.AllocsPerRun(100, func() { cc.authenticate("S1", user, pass, true) }); n != 0 {
		t.Errorf("cached auth check allocates %v times", n)
	}
}

// FuzzACL: any topic from the network is answered without panicking, and
// only the station's exact own topics are allowed.
func FuzzACL(f *testing.F) {
	for _, s := range []string{
		"swap/v1/stations/S1/telemetry", "swap/v1/stations/S1/cmd", "swap/v1/stations/S2/ack",
		"swap/v1/stations//status", "#", "swap/v1/stations/+/cmd", "", "swap/v1/stations/S1/status/x",
	} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, topic string, write bool) {
		if !allowed("S1", topic, write) {
			return
		}
		ok := false
		for _, k := range []wire.TopicKind{wire.KindStatus, wire.KindTelemetry, wire.KindAck, wire.KindCmd} {
			if topic == wire.Topic("S1", k) && (k == wire.KindCmd) != write {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("allowed(S1, %q, write=%v)", topic, write)
		}
	})
}
