package wire

// RotateSecretRequest is the body of POST /api/admin/stations/{sid}/secret.
// Grace is a Go duration ("1h", "30m"); empty means 0s: the old secret is
// refused at once. The answer is a CreateStationResponse with the new
// secret.
type RotateSecretRequest struct {
	Grace string `json:"grace,omitempty"`
}

// UserTokenResponse is the answer of POST /api/admin/users/{uid}/tokens:
// the new token's id (not a secret) and the token, shown only here.
type UserTokenResponse struct {
	ID     string `json:"id"`
	UserID string `json:"user_id"`
	Token  string `json:"token"`
}
