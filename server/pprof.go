package server

import (
	"net/http"
	"net/http/pprof"
)

// registerPprof mounts Go's runtime profiles under /debug/pprof/ for
// holders of the admin token (in the Authorization header only, never as
// ?token=), checked by guard. For example, the live heap after a collection:
//
//	curl -H "Authorization: Bearer $TOKEN" localhost:8000/debug/pprof/heap?gc=1 > heap.pb.gz
//	go tool pprof -top heap.pb.gz
//
// A CPU profile (?seconds=N) must end within the HTTP write timeout (30 s).
func registerPprof(mux *http.ServeMux, guard func(http.HandlerFunc) http.HandlerFunc) {
	mux.Handle("GET /debug/pprof/", guard(pprof.Index))
	mux.Handle("GET /debug/pprof/cmdline", guard(pprof.Cmdline))
	mux.Handle("GET /debug/pprof/profile", guard(pprof.Profile))
	mux.Handle("GET /debug/pprof/symbol", guard(pprof.Symbol))
	mux.Handle("GET /debug/pprof/trace", guard(pprof.Trace))
}
