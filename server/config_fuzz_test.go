package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoadFile: any file given to --config loads or fails with one clear
// line, and never panics; a loaded config either validates or says why on
// one line.
func FuzzLoadFile(f *testing.F) {
	for _, s := range []string{
		"data_dir: /var/lib/swapd\nmqtt_addr: \":1883\"\nhttp_addr: \":8000\"\n",
		"domain:\n  booking_hold: 15m\n  ready_soc: 90\n  command_timeout: 30s\n",
		"domain:\n  booking_hold: soon\n", "domain:\n  ready_soc: [1,2]\n", "unknown_key: 1\n",
		"websocket:\n  allowed_origins: [\"https://a.example\"]\n  max_conns_per_ip: 10\n",
		"mqtt_tls:\n  addr: \":8883\"\n", "log_level: loud\n", "events:\n  retention_events: 1e99\n",
		"- a\n- b\n", "{{{", "\xff\xfe", "a: &x [*x]\n", "",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "swapd.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := Defaults()
		if err := LoadFile(&cfg, path); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("LoadFile error is not one line: %q", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil && strings.Contains(err.Error(), "\n") {
			t.Fatalf("Validate error is not one line: %q", err)
		}
	})
}
