package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/server"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// GET /api/events on a station whose oldest events the per-station
// retention cap removed answers with gap:true and the events from the
// station's cut on, not an error.
func TestEventsGapAfterStationCap(t *testing.T) {
	sd := swapdtest.Start(t, func(c *server.Config) { c.Events.RetentionStationEvents = 5 })
	base := sd.HTTP
	if a := call(t, "POST", base+"/api/admin/stations", adminToken, `{"id":"F1","name":"flood","slots":4}`); a.status != http.StatusCreated {
		t.Fatalf("create station: %d %s", a.status, a.raw)
	}
	st := sd.Srv.Store()
	f, _ := json.Marshal(wire.InventoryUpdate{StationID: "F1", Inventory: wire.Inventory{TotalSlots: 4, EmptySlots: 4}})
	for range 20 {
		if _, err := st.Update(context.Background(), func(tx *store.Tx) error {
			return tx.Append(&store.Event{Type: wire.TypeInventoryUpdate, StationID: "F1", Fields: f})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Compact(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := call(t, "GET", base+"/api/events?station_id=F1&since=0", "", "")
	evs, _ := a.body["events"].([]any)
	if a.status != http.StatusOK || a.body["gap"] != true || len(evs) != 5 {
		t.Fatalf("events of the cut station: %d %s", a.status, a.raw)
	}
}
