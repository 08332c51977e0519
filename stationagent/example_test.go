package stationagent_test

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/swapbridge/swapbridge/stationagent"
	"github.com/swapbridge/swapbridge/stationagent/driver/sim"
)

// An agent embedded in another program (swapd --demo runs several): a
// simulated 12-slot station charging at 60× speed.
func Example() {
	cfg := stationagent.Config{
		Server:           "tcp://127.0.0.1:1883",
		StationID:        "demo-1",
		Secret:           "secret-from-provisioning",
		DataDir:          "./data/agents/demo-1",
		Driver:           stationagent.DriverSim,
		Sim:              sim.Config{Slots: 12, Speed: 60, FaultRate: 0.05},
		SnapshotInterval: 30 * time.Second,
	}
	a, err := stationagent.New(cfg, stationagent.WithLogger(slog.Default()))
	if err != nil {
		slog.Error("bad config", "err", err)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := a.Run(ctx); err != nil { // blocks until ctx is done
		slog.Error("agent", "err", err)
	}
}
