package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/swapbridge/swapbridge/api"
	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/wire"
)

func TestMaxReplayFromFileAndEnvironment(t *testing.T) {
	file := filepath.Join(t.TempDir(), "swapd.yaml")
	if err := os.WriteFile(file, []byte("websocket:\n  max_replay: 50\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := NewFlags("swapd", io.Discard)
	if err := f.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(nil))
	if err != nil || cfg.WebSocket.MaxReplay != 50 {
		t.Errorf("from the file: %d %v, want 50", cfg.WebSocket.MaxReplay, err)
	}
	cfg, err = Load(f, envMap(map[string]string{"SWAPD_WS_MAX_REPLAY": "70"}))
	if err != nil || cfg.WebSocket.MaxReplay != 70 {
		t.Errorf("SWAPD_WS_MAX_REPLAY over the file: %d %v, want 70", cfg.WebSocket.MaxReplay, err)
	}
	if _, err := Load(f, envMap(map[string]string{"SWAPD_WS_MAX_REPLAY": "many"})); err == nil {
		t.Error("SWAPD_WS_MAX_REPLAY=many accepted")
	}
	if d := Defaults().WebSocket.MaxReplay; d != 0 {
		t.Errorf("default %d, want 0 (the hub's default, 10000)", d)
	}
}

// TestMaxReplayAndSlowWebSocketLogins: swapd passes websocket.max_replay to
// the hub (a station channel's resume further back gets a snapshot), and a
// wrong token on a WebSocket is slowed like an HTTP login.
func TestMaxReplayAndSlowWebSocketLogins(t *testing.T) {
	cfg := testConfig(t)
	cfg.WebSocket.MaxReplay = 1
	srv := startServer(t, cfg)
	ctx := context.Background()
	admin := client.New("http://"+srv.HTTPAddr(), testAdminToken)
	for _, id := range []string{"r-1", "r-2"} {
		if _, err := admin.CreateStation(ctx, wire.CreateStationRequest{ID: id, Slots: 2}); err != nil {
			t.Fatal(err)
		}
	}
	last := srv.Store().LastSeq()
	if last < 2 {
		t.Fatalf("last seq %d: provisioning should have logged events", last)
	}
	base := "ws://" + srv.HTTPAddr()
	for since, recovered := range map[uint64]bool{0: false, last - 2: false, last - 1: true} {
		msgs := wsDial(t, base+"/ws/stations/?since="+strconv.FormatUint(since, 10), nil)
		select {
		case h := <-msgs:
			if h["type"] != "hello" || h["recovered"] != recovered {
				t.Errorf("since=%d: hello %v, want recovered %v", since, h, recovered)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("since=%d: no hello", since)
		}
	}

	start := time.Now()
	_, resp, err := websocket.DefaultDialer.Dial(base+"/ws/notifications/?token=wrong-token", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: %v, want 401", err)
	}
	if took := time.Since(start); took < api.DefaultLoginDelay {
		t.Errorf("a wrong WebSocket token answered after %v, want at least %v", took, api.DefaultLoginDelay)
	}
}
