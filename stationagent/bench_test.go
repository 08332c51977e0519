package stationagent

import (
	"encoding/json"
	"testing"

	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/wire"
)

// BenchmarkEnqueueTelemetry measures one delta telemetry message written to
// the outbox (encode + one fsync'd bbolt transaction).
func BenchmarkEnqueueTelemetry(b *testing.B) {
	a := offlineAgent(b)
	a.cfg.OutboxLimit = 1 << 30
	for b.Loop() {
		a.enqueueTelemetry(false, a.current[:1])
	}
}

// BenchmarkOutboxDrain measures the drain after an outage: b.N telemetry
// messages queued in the outbox are published through an in-process mochi
// broker and deleted on their PUBACKs.
func BenchmarkOutboxDrain(b *testing.B) {
	br := startBroker(b, "127.0.0.1:0")
	cfg := testConfig(b, br.URL(), b.TempDir())
	cfg.PollInterval = 1 << 40
	cfg.OutboxLimit = 1 << 30
	st, err := openState(cfg.DataDir)
	if err != nil {
		b.Fatal(err)
	}
	id := "B-1"
	slot := []wire.Slot{{Slot: 1, BatteryID: &id, SoC: 50, SoH: 90, TempC: 30, VoltageV: 50, Door: wire.DoorClosed, Locked: true}}
	err = st.update(func(tx *boltTx) error {
		for i := 1; i <= b.N; i++ {
			p, _ := json.Marshal(wire.Telemetry{BootID: "st-1-0-old", Seq: uint64(i), Slots: slot})
			if err := putOutbox(tx, recTelemetry, uint64(i), p); err != nil {
				return err
			}
		}
		return nil
	})
	st.close()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	r := startAgent(b, cfg)
	testwait.For(b, testwait.Timeout, "drained", func() bool { s := r.A.Status(); return s.Connected && s.OutboxDepth == 0 })
	b.StopTimer()
}
