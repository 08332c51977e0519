package realtime_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/swapbridge/swapbridge/realtime"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// stations stands in for the bridge, which provides snapshots and station
// existence in swapd.
type stations struct{}

func (stations) InventorySnapshots(sid string) ([]wire.InventoryUpdate, error) {
	return []wire.InventoryUpdate{{StationID: "S-001", Inventory: wire.Inventory{TotalSlots: 8}, Snapshot: true}}, nil
}
func (stations) StationExists(sid string) bool { return sid == "S-001" }

// users stands in for the token lookup over the store.
type users struct{}

func (users) UserForToken(tok string) (string, error) {
	if tok == "demo-token" {
		return "demo", nil
	}
	return "", errors.New("unknown token")
}

// The hub is the store's commit listener and serves its endpoints on the
// app's mux; Shutdown closes every socket with 1001 before the store closes.
func ExampleNewHub() {
	dir, _ := os.MkdirTemp("", "swapd")
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "swapd.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()

	hub, err := realtime.NewHub(realtime.Config{AllowedOrigins: []string{"https://app.example.com"}}, st, stations{}, users{})
	if err != nil {
		log.Fatal(err)
	}
	st.SetCommitListener(hub.Publish)

	mux := http.NewServeMux()
	hub.Register(mux) // GET /ws/stations/, /ws/stations/{sid}/, /ws/notifications/
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: mux}
	_ = srv // srv.ListenAndServe() in swapd

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx) // stops accepting; hijacked sockets are the hub's
	if err := hub.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}
