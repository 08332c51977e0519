package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

// The commit path is observable: commit durations and batch sizes of the
// store, and the bridge's send-queue drops, are in /metrics.
func TestMetricsShowTheCommitPath(t *testing.T) {
	cfg := testConfig(t)
	srv := startServer(t, cfg)
	base := "http://" + srv.HTTPAddr()
	admin := client.New(base, cfg.AdminToken)
	if _, err := admin.CreateStation(context.Background(), wire.CreateStationRequest{ID: "st-1", Name: "Test", Slots: 4}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+cfg.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		"swapd_store_commit_duration_seconds_count",
		"swapd_store_commit_batch_size_bucket",
		"swapd_bridge_send_queue_dropped_total 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	if strings.Contains(string(body), "swapd_store_commit_batch_size_count 0\n") {
		t.Error("no commit counted although a station was provisioned")
	}
}
