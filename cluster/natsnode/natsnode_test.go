package natsnode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/swapbridge/swapbridge/internal/testwait"
)

// freeAddrs returns n loopback addresses whose ports were free a moment
// ago (a route list must name every node before any of them starts).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// tlog writes a node's log to the test's log.
type tlog struct{ t *testing.T }

func (l tlog) Write(p []byte) (int, error) { l.t.Log(string(p)); return len(p), nil }

// startCluster starts n embedded nodes routed to each other.
func startCluster(t *testing.T, n int) []*Node {
	t.Helper()
	addrs := freeAddrs(t, n)
	nodes := make([]*Node, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			nd, err := Start(Config{
				Name:        fmt.Sprintf("n%d", i+1),
				StoreDir:    filepath.Join(t.TempDir(), "js"),
				ClusterAddr: addrs[i],
				Peers:       addrs,
				Logger:      slog.New(slog.NewTextHandler(tlog{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
			nodes[i] = nd
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, nd := range nodes {
			nd.Shutdown()
		}
	})
	return nodes
}

func connect(t *testing.T, nd *Node) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(nd.ClientURL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// retry calls fn until it succeeds or d passes (a JetStream cluster
// answers "no leader" until it elected one), polling through testwait.
func retry(t *testing.T, d time.Duration, what string, fn func() error) {
	t.Helper()
	var err error
	if !testwait.Until(d, func() bool { err = fn(); return err == nil }) {
		t.Fatalf("%s: still failing after %s: %v", what, d, err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{StoreDir: "x"}},
		{"no store dir", Config{Name: "n1"}},
		{"peers without a cluster address", Config{Name: "n1", StoreDir: "x", Peers: []string{"127.0.0.1:6222"}}},
		{"bad peer", Config{Name: "n1", StoreDir: "x", ClusterAddr: "127.0.0.1:0", Peers: []string{"nohost"}}},
		{"bad client port", Config{Name: "n1", StoreDir: "x", ClientAddr: "127.0.0.1:99999"}},
	} {
		if _, err := options(c.cfg); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	o, err := options(Config{Name: "n1", StoreDir: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.SyncAlways || !o.JetStream || o.Host != "127.0.0.1" || o.Port != -1 {
		t.Errorf("defaults: SyncAlways %v JetStream %v host %s port %d", o.SyncAlways, o.JetStream, o.Host, o.Port)
	}
}

// TestThreeNodeCluster forms a three-node JetStream cluster in-process,
// writes to an R3 stream with the per-subject fence swapd's commits use
// (Nats-Expected-Last-Subject-Sequence), kills the stream leader's node
// and checks that the survivors elect a new leader, keep every
// acknowledged message, and still refuse a write with a stale fence.
func TestThreeNodeCluster(t *testing.T) {
	nodes := startCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	js := connect(t, nodes[0])
	var st jetstream.Stream
	retry(t, 30*time.Second, "create R3 stream", func() (err error) {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3, Storage: jetstream.FileStorage})
		return err
	})

	var last uint64
	for i := range 20 {
		ack, err := js.Publish(ctx, "t.st-1", []byte(fmt.Sprint(i)), jetstream.WithExpectLastSequencePerSubject(last))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		last = ack.Sequence
	}
	// A writer holding an old fence is refused.
	if _, err := js.Publish(ctx, "t.st-1", []byte("stale"), jetstream.WithExpectLastSequencePerSubject(last-1)); err == nil {
		t.Fatal("a publish with a stale expected sequence was accepted")
	}

	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.Cluster.Leader
	var survivor *Node
	for _, nd := range nodes {
		if nd.Name() == leader {
			nd.Shutdown()
		} else if survivor == nil {
			survivor = nd
		}
	}
	js2 := connect(t, survivor)
	start := time.Now()
	retry(t, 30*time.Second, "publish after the leader's node died", func() error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		ack, err := js2.Publish(ctx, "t.st-1", []byte("after"), jetstream.WithExpectLastSequencePerSubject(last))
		if err != nil {
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
				t.Fatalf("the acknowledged writes were not all kept: %v", err)
			}
			return err
		}
		last = ack.Sequence
		return nil
	})
	t.Logf("writes stalled %.2fs while the cluster elected a new stream leader (old leader %s)", time.Since(start).Seconds(), leader)
	st2, err := js2.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info, err = st2.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 21 || info.Cluster.Leader == leader {
		t.Errorf("after failover: %d messages (want 21), leader %s (was %s)", info.State.Msgs, info.Cluster.Leader, leader)
	}
}
