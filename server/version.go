package server

// Version is swapd's version, set at build time with
// -ldflags "-X github.com/swapbridge/swapbridge/server.Version=…".
var Version = "0.1.0-dev"
