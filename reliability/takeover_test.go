package reliability

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/swapbridge/swapbridge/internal/swapdtest"
	"github.com/swapbridge/swapbridge/wire"
)

// TestTakeoverWithoutOfflineEvents: a station that reconnects again and
// again while its previous connection is still open (each with a Will
// saying offline) stays online: the event log gets no offline for it, only
// the online of its first status.
func TestTakeoverWithoutOfflineEvents(t *testing.T) {
	p := swapdtest.Start(t, nil)
	secrets := provision(t, p.Admin, 4, "TK-1")
	status := wire.Topic("TK-1", wire.KindStatus)
	will, _ := json.Marshal(wire.Status{Online: false, BootID: "boot-tk"})
	from := p.Srv.Store().LastSeq() // provisioning's events are before it
	var last paho.Client
	for i := range 8 {
		o := paho.NewClientOptions().AddBroker("tcp://"+p.MQTT).
			SetClientID("TK-1").SetUsername("TK-1").SetPassword(secrets["TK-1"]).
			SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(10*time.Second).SetWriteTimeout(10*time.Second).SetKeepAlive(30*time.Second).
			SetWill(status, string(will), 1, true)
		c := paho.NewClient(o)
		if tok := c.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("connection %d: %v", i+1, tok.Error())
		}
		// The previous connection is left open: this one takes it over.
		online, _ := json.Marshal(wire.Status{Online: true, BootID: "boot-tk", TS: time.Now().UTC(), Slots: 4})
		if tok := c.Publish(status, 1, true, online); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
			t.Fatalf("status on connection %d: %v", i+1, tok.Error())
		}
		last = c
	}
	last.Disconnect(50) // a clean end: no Will

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var ev struct {
		Events []json.RawMessage `json:"events"`
	}
	if err := p.Admin.Do(ctx, "GET", "/api/events?since=0&limit=1000&station_id=TK-1", nil, &ev); err != nil {
		t.Fatal(err)
	}
	var statuses []string
	for _, e := range ev.Events {
		var x struct {
			Type   string `json:"type"`
			Seq    uint64 `json:"seq"`
			Status string `json:"status"`
		}
		if json.Unmarshal(e, &x) == nil && x.Type == wire.TypeStationStatus && x.Seq > from {
			statuses = append(statuses, x.Status)
		}
	}
	t.Logf("station_status events over 8 connections, 7 of them takeovers: %v", statuses)
	if got := strings.Join(statuses, ","); got != wire.StationOnline {
		t.Errorf("station_status events %q, want one online and no offline", got)
	}
}
