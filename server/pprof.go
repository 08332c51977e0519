package server

import (
	"crypto/subtle"
	"net/http"
	"net/http/pprof"

	"github.com/swapbridge/swapbridge/api"
)

// registerPprof mounts Go's runtime profiles under /debug/pprof/ for
// holders of the admin token (Authorization: Bearer, or ?token=). For
// example, the live heap after a collection:
//
//	curl -H "Authorization: Bearer $TOKEN" localhost:8000/debug/pprof/heap?gc=1 > heap.pb.gz
//	go tool pprof -top heap.pb.gz
//
// A CPU profile (?seconds=N) must end within the HTTP write timeout (30 s).
func registerPprof(mux *http.ServeMux, token string) {
	guard := func(h http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if subtle.ConstantTimeCompare([]byte(api.Bearer(r)), []byte(token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="swapd-admin"`)
				http.Error(w, "the admin token is required", http.StatusUnauthorized)
				return
			}
			h(w, r)
		})
	}
	mux.Handle("GET /debug/pprof/", guard(pprof.Index))
	mux.Handle("GET /debug/pprof/cmdline", guard(pprof.Cmdline))
	mux.Handle("GET /debug/pprof/profile", guard(pprof.Profile))
	mux.Handle("GET /debug/pprof/symbol", guard(pprof.Symbol))
	mux.Handle("GET /debug/pprof/trace", guard(pprof.Trace))
}
