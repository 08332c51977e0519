package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/swapbridge/swapbridge/wire"
)

// maxBody bounds every request body.
const maxBody = 64 << 10

// apiError is an error with an HTTP status and a stable code.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// writeJSON writes v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"could not encode the response"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(b)
	w.Write([]byte{'\n'})
}

// writeError answers with the contract's error shape.
func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, wire.ErrorBody{Error: wire.ErrorDetail{Code: code, Message: message}})
}

// decodeBody decodes a JSON object body into v, with a size limit and clear
// messages for the usual mistakes.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "the body must be application/json")
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return errorf(http.StatusBadRequest, "invalid_json", "the request body is empty; a JSON object is required")
		case errors.As(err, &tooBig):
			return errorf(http.StatusRequestEntityTooLarge, "body_too_large", "the request body exceeds %d bytes", maxBody)
		case errors.As(err, &syn):
			return errorf(http.StatusBadRequest, "invalid_json", "malformed JSON at byte %d", syn.Offset)
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return errorf(http.StatusBadRequest, "invalid_json", "the body must be a JSON object")
			}
			return errorf(http.StatusBadRequest, "invalid_field", "field %q must be of type %s", field, typ.Type.String())
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errorf(http.StatusBadRequest, "invalid_json", "the JSON body ends unexpectedly")
		default:
			return errorf(http.StatusBadRequest, "invalid_json", "the body is not valid JSON")
		}
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "invalid_json", "the body must hold a single JSON object")
	}
	return nil
}
