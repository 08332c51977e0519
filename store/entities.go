package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/swapbridge/swapbridge/wire"
	bolt "go.etcd.io/bbolt"
)

// Station and user records start with a version byte and the 32-byte hash,
// so the auth paths read the hash without decoding anything.
const (
	entityVersion = 1
	hashOff       = 1
	entityHdrLen  = 1 + 32
)

// stationBody is the JSON part of a station record (the id is the key).
type stationBody struct {
	Name      string    `json:"name"`
	Slots     int       `json:"slots"`
	Lat       float64   `json:"lat"`
	Lon       float64   `json:"lon"`
	CreatedAt time.Time `json:"created_at"`
}

var errCorrupt = errors.New("store: corrupt record")

func encodeStation(st Station) ([]byte, error) {
	body, err := json.Marshal(stationBody{Name: st.Name, Slots: st.Slots, Lat: st.Lat, Lon: st.Lon, CreatedAt: st.CreatedAt})
	if err != nil {
		return nil, err
	}
	v := make([]byte, entityHdrLen, entityHdrLen+len(body))
	v[0] = entityVersion
	copy(v[hashOff:], st.SecretHash[:])
	return append(v, body...), nil
}

func decodeStation(id string, v []byte) (Station, error) {
	if len(v) < entityHdrLen || v[0] != entityVersion {
		return Station{}, fmt.Errorf("%w: station %q", errCorrupt, id)
	}
	var b stationBody
	if err := json.Unmarshal(v[entityHdrLen:], &b); err != nil {
		return Station{}, fmt.Errorf("%w: station %q: %v", errCorrupt, id, err)
	}
	st := Station{ID: id, Name: b.Name, Slots: b.Slots, Lat: b.Lat, Lon: b.Lon, CreatedAt: b.CreatedAt}
	copy(st.SecretHash[:], v[hashOff:entityHdrLen])
	return st, nil
}

func encodeUser(u User) []byte {
	v := make([]byte, entityHdrLen+8)
	v[0] = entityVersion
	copy(v[hashOff:], u.TokenHash[:])
	binary.BigEndian.PutUint64(v[entityHdrLen:], uint64(u.CreatedAt.UnixNano()))
	return v
}

func decodeUser(id string, v []byte) (User, error) {
	if len(v) != entityHdrLen+8 || v[0] != entityVersion {
		return User{}, fmt.Errorf("%w: user %q", errCorrupt, id)
	}
	u := User{ID: id, CreatedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[entityHdrLen:]))).UTC()}
	copy(u.TokenHash[:], v[hashOff:entityHdrLen])
	return u, nil
}

func getStation(btx *bolt.Tx, id string) (Station, error) {
	v := btx.Bucket(bucketStations).Get([]byte(id))
	if v == nil {
		return Station{}, fmt.Errorf("store: station %q: %w", id, ErrNotFound)
	}
	return decodeStation(id, v)
}

func getUser(btx *bolt.Tx, id string) (User, error) {
	v := btx.Bucket(bucketUsers).Get([]byte(id))
	if v == nil {
		return User{}, fmt.Errorf("store: user %q: %w", id, ErrNotFound)
	}
	return decodeUser(id, v)
}

// CreateStation provisions st; ErrExists if the id is taken. The id must be
// valid (wire.CheckID), the secret hash set, and Slots not negative; a zero
// CreatedAt means now. It is durable when it returns.
func (s *Store) CreateStation(ctx context.Context, st Station) error {
	_, err := s.Update(ctx, func(tx *Tx) error { return tx.CreateStation(st) })
	return err
}

// CreateStation provisions st within the transaction, with the rules of
// Store.CreateStation.
func (tx *Tx) CreateStation(st Station) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if err := wire.CheckID("station id", st.ID); err != nil {
		return fmt.Errorf("store: create station: %w", err)
	}
	if st.SecretHash == ([32]byte{}) {
		return fmt.Errorf("store: create station %q: no secret hash", st.ID)
	}
	if st.Slots < 0 {
		return fmt.Errorf("store: create station %q: negative slot count", st.ID)
	}
	if st.CreatedAt.IsZero() {
		st.CreatedAt = time.Now().UTC()
	}
	b := tx.btx.Bucket(bucketStations)
	if b.Get([]byte(st.ID)) != nil {
		return fmt.Errorf("store: station %q: %w", st.ID, ErrExists)
	}
	v, err := encodeStation(st)
	if err != nil {
		return fmt.Errorf("store: create station %q: %w", st.ID, err)
	}
	if err := b.Put([]byte(st.ID), v); err != nil {
		return fmt.Errorf("store: create station %q: %w", st.ID, err)
	}
	return nil
}

// Station returns the provisioned station or ErrNotFound.
func (s *Store) Station(id string) (Station, error) {
	var st Station
	err := s.view(func(btx *bolt.Tx) error {
		var err error
		st, err = getStation(btx, id)
		return err
	})
	return st, err
}

// Stations returns every provisioned station, ordered by id.
func (s *Store) Stations() ([]Station, error) {
	out := []Station{}
	err := s.view(func(btx *bolt.Tx) error {
		return btx.Bucket(bucketStations).ForEach(func(k, v []byte) error {
			st, err := decodeStation(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, st)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// StationSecretHash returns the SHA-256 of the station's secret, or
// ErrNotFound. It is what the broker's auth cache loads from.
func (s *Store) StationSecretHash(id string) ([32]byte, error) {
	var h [32]byte
	err := s.view(func(btx *bolt.Tx) error {
		v := btx.Bucket(bucketStations).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("store: station %q: %w", id, ErrNotFound)
		}
		if len(v) < entityHdrLen || v[0] != entityVersion {
			return fmt.Errorf("%w: station %q", errCorrupt, id)
		}
		copy(h[:], v[hashOff:entityHdrLen])
		return nil
	})
	return h, err
}

// CreateUser adds u; ErrExists if the id (or the token hash) is taken. The id
// must be valid and the token hash set; a zero CreatedAt means now. It is
// durable when it returns.
func (s *Store) CreateUser(ctx context.Context, u User) error {
	if err := wire.CheckID("user id", u.ID); err != nil {
		return fmt.Errorf("store: create user: %w", err)
	}
	if u.TokenHash == ([32]byte{}) {
		return fmt.Errorf("store: create user %q: no token hash", u.ID)
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = time.Now().UTC()
	}
	v := encodeUser(u)
	_, err := s.Update(ctx, func(tx *Tx) error {
		if err := tx.check(true); err != nil {
			return err
		}
		users, tokens := tx.btx.Bucket(bucketUsers), tx.btx.Bucket(bucketTokens)
		if users.Get([]byte(u.ID)) != nil {
			return fmt.Errorf("store: user %q: %w", u.ID, ErrExists)
		}
		if tokens.Get(u.TokenHash[:]) != nil {
			return fmt.Errorf("store: user %q: token hash in use: %w", u.ID, ErrExists)
		}
		if err := users.Put([]byte(u.ID), v); err != nil {
			return fmt.Errorf("store: create user %q: %w", u.ID, err)
		}
		return tx.addToken(u.ID, u.TokenHash, u.CreatedAt)
	})
	return err
}

// User returns the user or ErrNotFound.
func (s *Store) User(id string) (User, error) {
	var u User
	err := s.view(func(btx *bolt.Tx) error {
		var err error
		u, err = getUser(btx, id)
		return err
	})
	return u, err
}

// UserByTokenHash returns the user whose token hashes to h, or ErrNotFound.
func (s *Store) UserByTokenHash(h [32]byte) (User, error) {
	var u User
	err := s.view(func(btx *bolt.Tx) error {
		id := btx.Bucket(bucketTokens).Get(h[:])
		if id == nil {
			return fmt.Errorf("store: user by token: %w", ErrNotFound)
		}
		var err error
		u, err = getUser(btx, string(id))
		return err
	})
	return u, err
}
