package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/swapbridge/swapbridge/client"
	"github.com/swapbridge/swapbridge/server"
)

// target is what a scenario runs against: a swapd (external or embedded)
// or the bare broker of the baseline.
type target struct {
	name     string // "swapd", "swapd (embedded)" or "baseline (bare mochi)"
	mqttAddr string
	httpBase string // "" for the baseline
	wsBase   string
	admin    *client.Client
	token    string // the admin token (for /debug/pprof)
	hc       *http.Client
	pid      int // whose /proc is read; 0: none
	base     *baseline
	closeFn  func() error
}

func (t *target) isBaseline() bool { return t.base != nil }

func newHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 1024
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// openTarget connects to, or starts, what cfg names.
func openTarget(ctx context.Context, cfg *Config, baselineRun bool) (*target, error) {
	hc := newHTTPClient()
	if baselineRun {
		b, err := startBaseline()
		if err != nil {
			return nil, err
		}
		return &target{name: "baseline (bare mochi)", mqttAddr: b.addr, hc: hc, pid: os.Getpid(), base: b, closeFn: b.close}, nil
	}
	if cfg.Embedded {
		return startEmbedded(ctx, cfg, hc)
	}
	if cfg.Server == "" || cfg.MQTT == "" {
		return nil, errors.New("bench: give --server and --mqtt of a running swapd, or --embedded")
	}
	if cfg.AdminToken == "" {
		return nil, errors.New("bench: the admin token is needed to provision stations (--admin-token or SWAPD_ADMIN_TOKEN)")
	}
	base := strings.TrimRight(cfg.Server, "/")
	adm := client.New(base, cfg.AdminToken)
	adm.HTTP = hc
	mqttAddr := strings.TrimPrefix(cfg.MQTT, "tcp://")
	return &target{
		name: "swapd", mqttAddr: mqttAddr, httpBase: base, wsBase: "ws" + strings.TrimPrefix(base, "http"),
		admin: adm, token: cfg.AdminToken, hc: hc, pid: cfg.ServerPID, closeFn: func() error { return nil },
	}, nil
}

func startEmbedded(ctx context.Context, cfg *Config, hc *http.Client) (*target, error) {
	dir := cfg.DataDir
	tmp := ""
	if dir == "" {
		var err error
		tmp, err = os.MkdirTemp("", "swapbench-")
		if err != nil {
			return nil, err
		}
		dir = tmp
	}
	sc := server.Defaults()
	sc.DataDir = dir
	sc.MQTTAddr = "127.0.0.1:0"
	sc.HTTPAddr = "127.0.0.1:0"
	sc.AdminToken = randomHex(16)
	// Every simulated client comes from one address: no per-address
	// limits. Room for a storm's overlapping reconnects.
	sc.WebSocket.MaxConnsPerIP = -1
	sc.Limits.HTTPRate = -1
	sc.Pprof = true // for the live-memory figures
	sc.Limits.MQTTMaxClients = 2 * max(cfg.Stations, 10000)
	if cfg.noPublishLimit {
		sc.Limits.MQTTPublishRate = -1
		sc.Events.StationRate = -1 // every step's inventory_update is measured
	}
	srv, err := server.New(sc, nil)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("bench: embedded swapd: %w", err)
	}
	if err := srv.Start(ctx); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("bench: embedded swapd: %w", err)
	}
	base := "http://" + srv.HTTPAddr()
	adm := client.New(base, sc.AdminToken)
	adm.HTTP = hc
	return &target{
		name: "swapd (embedded)", mqttAddr: srv.MQTTAddr(), httpBase: base, wsBase: "ws://" + srv.HTTPAddr(),
		admin: adm, token: sc.AdminToken, hc: hc, pid: os.Getpid(),
		closeFn: func() error {
			sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := srv.Shutdown(sctx)
			if tmp != "" {
				os.RemoveAll(tmp)
			}
			return err
		},
	}, nil
}

// retryLimited calls f until it does not fail with 429 (the server's
// per-address rate limit), waiting a second between tries, at most 30 times.
func retryLimited(ctx context.Context, f func() error) error {
	for i := 0; ; i++ {
		err := f()
		var ce *client.Error
		if i >= 30 || !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests {
			return err
		}
		t := time.NewTimer(time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
