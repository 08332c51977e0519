package catalog

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/swapbridge/swapbridge/cluster/natsnode"
	"github.com/swapbridge/swapbridge/internal/testwait"
	"github.com/swapbridge/swapbridge/store"
)

func startNATS(t *testing.T) string {
	t.Helper()
	n, err := natsnode.Start(natsnode.Config{Name: "n1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n.ClientURL()
}

// member is one node's catalogue: its own connection and view, and what
// its hooks were told.
type member struct {
	cat  *Catalog
	view *store.Store

	mu       sync.Mutex
	stations []string
	users    []string
}

func (m *member) told() (stations, users []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.stations...), append([]string(nil), m.users...)
}

func open(t *testing.T, url, viewPath string) *member {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if viewPath == "" {
		viewPath = filepath.Join(t.TempDir(), "view.db")
	}
	view, err := store.Open(viewPath, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { view.Close() })
	m := &member{view: view}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m.cat, err = Open(ctx, Config{JS: js, View: view,
		OnStation: func(sid string) {
			m.mu.Lock()
			m.stations = append(m.stations, sid)
			m.mu.Unlock()
		},
		OnUserTokens: func(uid string) {
			m.mu.Lock()
			m.users = append(m.users, uid)
			m.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.cat.Close() })
	return m
}

func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestReplicatedCatalogue: a write through one node is in that node's view
// when it returns and in the others' soon after; the bucket's
// compare-and-set refuses what the single node's store refuses; the hooks
// run on every node.
func TestReplicatedCatalogue(t *testing.T) {
	url := startNATS(t)
	a, b := open(t, url, ""), open(t, url, "")
	ctx := context.Background()

	if err := a.cat.CreateStation(ctx, store.Station{ID: "st-1", Name: "Main St", Slots: 8, SecretHash: hash("s1")}); err != nil {
		t.Fatal(err)
	}
	if got, err := a.view.StationSecretHash("st-1"); err != nil || got != hash("s1") {
		t.Fatalf("writer's view right after create: %x, %v", got, err)
	}
	testwait.For(t, 5*time.Second, "the station in the other view", func() bool {
		st, err := b.view.Station("st-1")
		return err == nil && st.Name == "Main St" && st.Slots == 8
	})
	if err := b.cat.CreateStation(ctx, store.Station{ID: "st-1", SecretHash: hash("other")}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create of st-1 through another node: %v, want ErrExists", err)
	}
	if err := a.cat.CreateStation(ctx, store.Station{ID: "bad id", SecretHash: hash("x")}); err == nil {
		t.Fatal("a bad id was accepted")
	}

	until, err := b.cat.RotateStationSecret(ctx, "st-1", hash("s2"), time.Hour)
	if err != nil || until.IsZero() {
		t.Fatalf("rotate: %v, %v", until, err)
	}
	testwait.For(t, 5*time.Second, "the rotation in the first view", func() bool {
		cur, prev, pu, err := a.view.StationSecretHashes("st-1")
		return err == nil && cur == hash("s2") && prev == hash("s1") && pu.Equal(until)
	})
	if _, err := a.cat.RotateStationSecret(ctx, "st-none", hash("x"), 0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rotate of an unknown station: %v", err)
	}
	testwait.For(t, 5*time.Second, "OnStation on both nodes", func() bool {
		sa, _ := a.told()
		sb, _ := b.told()
		return contains(sa, "st-1") && contains(sb, "st-1")
	})

	if err := a.cat.CreateUser(ctx, store.User{ID: "u-1", TokenHash: hash("t1")}); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.CreateUser(ctx, store.User{ID: "u-2", TokenHash: hash("t1")}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("a second user with a token hash in use: %v", err)
	}
	if _, err := b.view.User("u-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused user is in the view: %v", err)
	}
	if _, err := b.cat.AddUserToken(ctx, "u-1", hash("t2")); err != nil {
		t.Fatal(err)
	}
	if u, err := b.view.UserByTokenHash(hash("t2")); err != nil || u.ID != "u-1" {
		t.Fatalf("the added token on its writer's view: %v, %v", u, err)
	}
	testwait.For(t, 5*time.Second, "both tokens on the first view", func() bool {
		u1, e1 := a.view.UserByTokenHash(hash("t1"))
		u2, e2 := a.view.UserByTokenHash(hash("t2"))
		return e1 == nil && e2 == nil && u1.ID == "u-1" && u2.ID == "u-1"
	})
	n, err := a.cat.RevokeUserTokens(ctx, "u-1")
	if err != nil || n != 2 {
		t.Fatalf("revoke: %d, %v; want 2", n, err)
	}
	testwait.For(t, 5*time.Second, "revocation everywhere", func() bool {
		_, e1 := b.view.UserByTokenHash(hash("t1"))
		_, e2 := b.view.UserByTokenHash(hash("t2"))
		_, ub := b.told()
		return errors.Is(e1, store.ErrNotFound) && errors.Is(e2, store.ErrNotFound) && contains(ub, "u-1")
	})
	if _, err := b.view.User("u-1"); err != nil {
		t.Fatalf("revocation removed the user: %v", err)
	}
	if err := b.cat.DeleteUser(ctx, "u-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.cat.DeleteUser(ctx, "u-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	testwait.For(t, 5*time.Second, "the user gone from the first view", func() bool {
		_, err := a.view.User("u-1")
		return errors.Is(err, store.ErrNotFound)
	})

	if err := b.cat.DeleteStation(ctx, "st-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.view.Station("st-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted station on its writer's view: %v", err)
	}
	testwait.For(t, 5*time.Second, "the station gone from the first view", func() bool {
		_, err := a.view.Station("st-1")
		return errors.Is(err, store.ErrNotFound)
	})
	// An id freed by deletion can be provisioned again.
	if err := a.cat.CreateStation(ctx, store.Station{ID: "st-1", SecretHash: hash("s3")}); err != nil {
		t.Fatalf("re-provision after delete: %v", err)
	}
}

// TestViewCatchesUp: a node whose view missed changes while it was down
// (a deletion among them) holds the catalogue as it is once Open returns.
func TestViewCatchesUp(t *testing.T) {
	url := startNATS(t)
	a := open(t, url, "")
	ctx := context.Background()
	for _, id := range []string{"st-1", "st-2"} {
		if err := a.cat.CreateStation(ctx, store.Station{ID: id, SecretHash: hash(id)}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "view.db")
	b := open(t, url, path)
	if _, err := b.view.Station("st-2"); err != nil {
		t.Fatalf("a new node's view after Open: %v", err)
	}
	b.cat.Close()
	b.view.Close()

	if err := a.cat.DeleteStation(ctx, "st-2"); err != nil {
		t.Fatal(err)
	}
	if err := a.cat.CreateStation(ctx, store.Station{ID: "st-3", SecretHash: hash("st-3")}); err != nil {
		t.Fatal(err)
	}
	b = open(t, url, path)
	if _, err := b.view.Station("st-2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a station deleted while the node was down: %v", err)
	}
	for _, id := range []string{"st-1", "st-3"} {
		if _, err := b.view.Station(id); err != nil {
			t.Fatalf("station %s after the restart: %v", id, err)
		}
	}
}
