// Package web is swapd's live dashboard: static HTML, CSS and JavaScript
// modules embedded with go:embed, and the http.Handler that serves them.
//
// The page is a client of the external contract only: it reads the HTTP API
// (/api/stations, /api/stations/{sid}, /api/bookings, /api/events) and
// follows the WebSocket channels /ws/stations/, /ws/stations/{sid}/ and
// /ws/notifications/, resuming with ?since= after a reconnect. No Node build
// step is involved; the files under static/ are served as they are.
//
// Register mounts GET / and GET /ui/… on a mux for normal mode, where
// /ui/config.json says {"demo":false} and carries no secret. swapd --demo
// mounts a DemoSignIn at GET /ui/config.json as well, which offers the demo
// user's one-click sign-in; New(Options{DemoUser, DemoToken}) does the same
// in a single handler.
//
// Nothing here blocks beyond writing a response, and the package owns no
// goroutine.
package web
