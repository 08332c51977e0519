package broker_test

import (
	"crypto/sha256"
	"errors"
	"log"

	"github.com/swapbridge/swapbridge/broker"
	"github.com/swapbridge/swapbridge/wire"
)

var errUnknown = errors.New("unknown station")

// stations is a Credentials backed by a map of secret hashes.
type stations map[string][32]byte

func (s stations) StationSecretHash(sid string) ([32]byte, error) {
	h, ok := s[sid]
	if !ok {
		return h, errUnknown
	}
	return h, nil
}

// bridge is a Handler.
type bridge struct{}

func (bridge) HandlePublish(sid string, kind wire.TopicKind, payload []byte, done func(error)) error {
	log.Printf("%s %s: %s", sid, kind, payload)
	done(nil) // once it is durably stored: the PUBACK goes out then
	return nil
}
func (bridge) StationConnected(sid string)    {}
func (bridge) StationDisconnected(sid string) {}

func Example() {
	creds := stations{"S1": sha256.Sum256([]byte("the-secret-returned-at-provisioning"))}
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", NotFound: errUnknown}, creds)
	if err != nil {
		log.Fatal(err)
	}
	b.SetHandler(bridge{})
	if err := b.Start(); err != nil {
		log.Fatal(err) // e.g. the port is taken
	}
	defer b.Close()

	// After provisioning S2 (or rotating S1's secret):
	b.Invalidate("S2")

	// A command to a station; its ack arrives through HandlePublish.
	if err := b.SendToStation("S1", []byte(`{"id":"c1","action":"snapshot"}`)); err != nil {
		log.Print(err)
	}
}
