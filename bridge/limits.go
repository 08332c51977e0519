package bridge

import (
	"errors"
	"sync"

	"github.com/swapbridge/swapbridge/wire"
)

// activeBookings counts each user's active bookings (pending, confirmed or
// ready) across every station, so that Book can check and reserve a place
// under the user's limit atomically, although bookings at different
// stations are made under different station mutexes. A place is reserved
// before the booking's commit and given back if the commit fails; a booking
// leaves the set when a commit ends it (cancelled, expired, failed,
// collected). Start rebuilds the sets from the stations' reservations.
//
// The sets are a cache of the booking records: when a user is at the limit,
// Book checks the committed bookings of the set against the log and drops
// those that are no longer active, so an ending that did not pass through
// the bridge's commit cannot keep a user locked out.
type activeBookings struct {
	limit int // ≤ 0: none
	mu    sync.Mutex
	users map[string]map[string]bool // uid → booking id → committed
	owner map[string]string          // booking id → uid
}

func newActiveBookings(limit int) *activeBookings {
	return &activeBookings{limit: limit, users: map[string]map[string]bool{}, owner: map[string]string{}}
}

// add records a committed active booking (Start).
func (a *activeBookings) add(uid, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.put(uid, id, true)
}

func (a *activeBookings) put(uid, id string, committed bool) {
	set := a.users[uid]
	if set == nil {
		set = map[string]bool{}
		a.users[uid] = set
	}
	set[id] = committed
	a.owner[id] = uid
}

// reserve takes a place for booking id of uid, or reports false when the
// user already holds limit active bookings. Before refusing it drops the
// user's committed bookings that the log no longer holds as active.
func (a *activeBookings) reserve(lookup func(id string) (wire.Booking, error), uid, id string) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.limit > 0 && len(a.users[uid]) >= a.limit {
		if err := a.recheck(lookup, uid); err != nil {
			return false, err
		}
		if len(a.users[uid]) >= a.limit {
			return false, nil
		}
	}
	a.put(uid, id, false)
	return true, nil
}

// recheck drops the committed bookings of uid whose stored status is no
// longer active. a.mu is held.
func (a *activeBookings) recheck(lookup func(id string) (wire.Booking, error), uid string) error {
	var gone []string
	var err error
	for id, committed := range a.users[uid] {
		if !committed {
			continue // its commit is under way
		}
		bk, lerr := lookup(id)
		if errors.Is(lerr, ErrBookingNotFound) {
			gone = append(gone, id)
			continue
		}
		if lerr != nil {
			err = lerr
			break
		}
		if !activeStatus(bk.Status) {
			gone = append(gone, id)
		}
	}
	for _, id := range gone {
		a.drop(id)
	}
	return err
}

// committed marks a reserved place as a committed booking.
func (a *activeBookings) committed(uid, id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if set := a.users[uid]; set != nil {
		if _, ok := set[id]; ok {
			set[id] = true
		}
	}
}

// release gives back the place of booking id (ended, or its commit
// failed). Releasing an unknown id does nothing.
func (a *activeBookings) release(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.drop(id)
}

func (a *activeBookings) drop(id string) {
	uid, ok := a.owner[id]
	if !ok {
		return
	}
	delete(a.owner, id)
	set := a.users[uid]
	delete(set, id)
	if len(set) == 0 {
		delete(a.users, uid)
	}
}
