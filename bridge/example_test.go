package bridge_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"

	"github.com/swapbridge/swapbridge/bridge"
	"github.com/swapbridge/swapbridge/store"
	"github.com/swapbridge/swapbridge/wire"
)

// nopSender stands in for the broker.
type nopSender struct{}

func (nopSender) SendToStation(sid string, payload []byte) error { return nil }

func Example() {
	dir, _ := os.MkdirTemp("", "bridge-example")
	defer os.RemoveAll(dir)
	st, err := store.Open(filepath.Join(dir, "swapd.db"), store.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer st.Close()
	ctx := context.Background()
	info := store.Station{ID: "S1", Name: "Depot", Slots: 2, SecretHash: sha256.Sum256([]byte("secret"))}
	_ = st.CreateStation(ctx, info)

	// The broker is the CommandSender in swapd; broker.SetHandler(b) routes
	// station publishes to b.HandlePublish.
	b, err := bridge.New(bridge.Config{}, st, nopSender{})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := b.Start(ctx); err != nil {
		fmt.Println(err)
		return
	}
	defer b.Close()

	// publish is what the broker does with a station's message: hand it
	// over, and acknowledge it once done reports it durable.
	publish := func(kind wire.TopicKind, payload string) error {
		durable := make(chan error, 1)
		if err := b.HandlePublish("S1", kind, []byte(payload), func(err error) { durable <- err }); err != nil {
			return err
		}
		return <-durable
	}

	// A station reports a charged battery in slot 1.
	_ = publish(wire.KindStatus, `{"online":true,"boot_id":"b1"}`)
	err = publish(wire.KindTelemetry, `{"boot_id":"b1","seq":1,"full":true,"slots":[
		{"slot":1,"battery_id":"B-1","soc":96,"soh":98,"temp_c":28,"voltage_v":52,"charging":false,"door":"closed","locked":true,"fault":""},
		{"slot":2,"battery_id":null,"door":"closed","locked":true}]}`)
	fmt.Println("telemetry stored:", err == nil)

	bk, err := b.Book(ctx, "rider1", "S1")
	fmt.Println(bk.Status, bk.Slot, bk.BatteryID, err)
	_, err = b.Book(ctx, "rider2", "S1")
	fmt.Println(err)

	v, _ := b.StationView("S1")
	fmt.Println(v.Status, v.AvailableBatteries, v.BookedBatteries, v.EmptySlots)
	// Output:
	// telemetry stored: true
	// pending 1 B-1 <nil>
	// bridge: no battery available at station S1
	// online 0 1 1
}
