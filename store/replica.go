package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/swapbridge/swapbridge/wire"
)

// Writes for a store used as a replica of a catalogue kept elsewhere (a
// cluster's replicated catalogue, cluster/catalog): each one puts an entity
// as it is there, whatever the store held before, so applying the same
// entry twice, or an older one followed by a newer one, ends in the newer.
// The rules that decide whether a write is allowed (a taken id, a token
// hash in use) are the catalogue's, checked before the entry was written.

// PutStation makes st the station's record, with prev as its previous
// secret's hash until prevUntil (a zero prev: none).
func (tx *Tx) PutStation(st Station, prev [32]byte, prevUntil time.Time) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if err := wire.CheckID("station id", st.ID); err != nil {
		return fmt.Errorf("store: put station: %w", err)
	}
	v, err := encodeStation(st)
	if err != nil {
		return fmt.Errorf("store: put station %q: %w", st.ID, err)
	}
	if err := tx.btx.Bucket(bucketStations).Put([]byte(st.ID), v); err != nil {
		return fmt.Errorf("store: put station %q: %w", st.ID, err)
	}
	pb := tx.btx.Bucket(bucketPrevSecret)
	if prev == ([32]byte{}) {
		err = pb.Delete([]byte(st.ID))
	} else {
		p := make([]byte, 40)
		copy(p, prev[:])
		binary.BigEndian.PutUint64(p[32:], uint64(prevUntil.UnixNano()))
		err = pb.Put([]byte(st.ID), p)
	}
	if err != nil {
		return fmt.Errorf("store: put station %q: %w", st.ID, err)
	}
	return nil
}

// RemoveStation removes the station's record and credentials if it has
// them (DeleteStation without ErrNotFound).
func (tx *Tx) RemoveStation(id string) error {
	if err := tx.DeleteStation(id); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

// PutUser makes u the user's record; its tokens are not touched.
func (tx *Tx) PutUser(u User) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if err := wire.CheckID("user id", u.ID); err != nil {
		return fmt.Errorf("store: put user: %w", err)
	}
	if err := tx.btx.Bucket(bucketUsers).Put([]byte(u.ID), encodeUser(u)); err != nil {
		return fmt.Errorf("store: put user %q: %w", u.ID, err)
	}
	return nil
}

// RemoveUser removes the user's record and every token of it, if it has
// them.
func (tx *Tx) RemoveUser(uid string) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if _, err := tx.revokeTokens(uid); err != nil {
		return err
	}
	if err := tx.btx.Bucket(bucketUsers).Delete([]byte(uid)); err != nil {
		return fmt.Errorf("store: remove user %q: %w", uid, err)
	}
	return nil
}

// PutToken makes hash a token of uid (taking it from another user if it
// was theirs), created at created.
func (tx *Tx) PutToken(uid string, hash [32]byte, created time.Time) error {
	if err := tx.check(true); err != nil {
		return err
	}
	if err := tx.RemoveToken(hash); err != nil {
		return err
	}
	return tx.addToken(uid, hash, created)
}

// RemoveToken removes the token whose SHA-256 is hash, if there is one.
func (tx *Tx) RemoveToken(hash [32]byte) error {
	if err := tx.check(true); err != nil {
		return err
	}
	tokens := tx.btx.Bucket(bucketTokens)
	owner := tokens.Get(hash[:])
	if owner == nil {
		return nil
	}
	k := tokenListKey(string(owner), hash[:])
	if err := tokens.Delete(hash[:]); err != nil {
		return fmt.Errorf("store: remove token: %w", err)
	}
	if err := tx.btx.Bucket(bucketTokenList).Delete(k); err != nil {
		return fmt.Errorf("store: remove token: %w", err)
	}
	return nil
}

// UserTokenHashes returns the SHA-256 of each of the user's tokens, in
// hash order; ErrNotFound for an unknown user.
func (s *Store) UserTokenHashes(uid string) ([][32]byte, error) {
	var out [][32]byte
	err := s.View(func(tx *Tx) error {
		if tx.btx.Bucket(bucketUsers).Get([]byte(uid)) == nil {
			return fmt.Errorf("store: user %q: %w", uid, ErrNotFound)
		}
		prefix := tokenListKey(uid, nil)
		c := tx.btx.Bucket(bucketTokenList).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var h [32]byte
			copy(h[:], k[len(prefix):])
			out = append(out, h)
		}
		return nil
	})
	return out, err
}

// TokenUser returns the id of the user whose token hashes to h, or "".
func (tx *Tx) TokenUser(h [32]byte) string {
	if tx.check(false) != nil {
		return ""
	}
	return string(tx.btx.Bucket(bucketTokens).Get(h[:]))
}
