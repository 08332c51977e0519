package wire

import "time"

// ErrorBody is the JSON body of every HTTP error:
// {"error":{"code":"…","message":"…"}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Booking statuses.
const (
	BookingStatusPending   = "pending"
	BookingStatusConfirmed = "confirmed"
	BookingStatusReady     = "ready"
	BookingStatusCollected = "collected"
	BookingStatusCancelled = "cancelled"
	BookingStatusExpired   = "expired"
	BookingStatusFailed    = "failed"
)

// Booking is the HTTP view of a booking.
type Booking struct {
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	StationID string    `json:"station_id"`
	Slot      int       `json:"slot"`
	BatteryID string    `json:"battery_id"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Reason    string    `json:"reason,omitempty"`
}

// CreateStationRequest is the body of POST /api/admin/stations.
type CreateStationRequest struct {
	ID    string  `json:"id"`
	Name  string  `json:"name"`
	Slots int     `json:"slots"`
	Lat   float64 `json:"lat"`
	Lon   float64 `json:"lon"`
}

// CreateStationResponse is the 201 body of POST /api/admin/stations. The
// secret is shown only here.
type CreateStationResponse struct {
	ID     string `json:"id"`
	Secret string `json:"secret"`
}

// CreateUserRequest is the body of POST /api/admin/users.
type CreateUserRequest struct {
	ID string `json:"id"`
}

// CreateUserResponse is the 201 body of POST /api/admin/users.
type CreateUserResponse struct {
	ID    string `json:"id"`
	Token string `json:"token"`
}

// StationView is a station in GET /api/stations; GET /api/stations/{sid}
// adds its slots.
type StationView struct {
	ID       string    `json:"id"`
	Name     string    `json:"name"`
	Lat      float64   `json:"lat"`
	Lon      float64   `json:"lon"`
	Status   string    `json:"status"`
	Online   bool      `json:"online"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	Inventory
	Slots []SlotView `json:"slots,omitempty"`
}

// SlotView is one slot in GET /api/stations/{sid}.
type SlotView struct {
	Slot
	Reserved  bool   `json:"reserved"`
	BookingID string `json:"booking_id,omitempty"`
	Swappable bool   `json:"swappable"`
}
