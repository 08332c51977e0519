package store_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/swapbridge/swapbridge/store"
)

func Example() {
	dir, err := os.MkdirTemp("", "swapd-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := store.Open(filepath.Join(dir, "swapd.db"), store.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	// The listener sees every durable event once, in seq order.
	s.SetCommitListener(func(events []store.Event) {
		for _, ev := range events {
			fmt.Println("committed", ev.Seq, ev.Type)
		}
	})

	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	// Update returns once the change is on disk. State and events go in one
	// transaction.
	_, err = s.Update(context.Background(), func(tx *store.Tx) error {
		if err := tx.Put(store.KindStationState, "st-1", []byte(`{"online":true}`)); err != nil {
			return err
		}
		for _, ev := range []store.Event{
			{Type: "station_status", StationID: "st-1", Time: ts, Fields: []byte(`{"station_id":"st-1","status":"online"}`)},
			{Type: "notification", UserID: "alice", Time: ts, Fields: []byte(`{"title":"Hi","message":"Welcome","level":"info"}`)},
		} {
			if err := tx.Append(&ev); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	// A client of station st-1 resuming after seq 0.
	events, err := s.EventsAfter(store.Channel{Kind: store.OneStation, ID: "st-1"}, 0, 100)
	if err != nil {
		log.Fatal(err)
	}
	for _, ev := range events {
		fmt.Println(string(ev.Data))
	}
	fmt.Println("last seq", s.LastSeq())
	// Output:
	// committed 1 station_status
	// committed 2 notification
	// {"type":"station_status","seq":1,"ts":"2026-01-02T03:04:05Z","station_id":"st-1","status":"online"}
	// last seq 2
}
