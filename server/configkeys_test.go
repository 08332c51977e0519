package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnknownConfigKeys: a typo in the config file is named as the key the
// operator wrote, with its line, its section and the nearest known key, in
// one line without Go type names.
func TestUnknownConfigKeys(t *testing.T) {
	cases := map[string]struct {
		file string
		want []string
	}{
		"top level": {
			file: "mqtt_addr: \":1883\"\nhttp_adr: \":8000\"\n",
			want: []string{`line 2: unknown key "http_adr" (did you mean "http_addr"?)`},
		},
		"nested section": {
			file: "domain:\n  ready_soc: 80\n  booking_hodl: 10m\n",
			want: []string{`line 3: unknown key "booking_hodl" in domain (did you mean "booking_hold"?)`},
		},
		"no near key": {
			file: "teleport: true\n",
			want: []string{`line 1: unknown key "teleport"`},
		},
		"two typos": {
			file: "data_dirr: x\nwebsocket:\n  max_replays: 5\n",
			want: []string{
				`line 1: unknown key "data_dirr" (did you mean "data_dir"?)`,
				`line 3: unknown key "max_replays" in websocket (did you mean "max_replay"?)`,
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "swapd.yaml")
			if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg := Defaults()
			err := LoadFile(&cfg, p)
			if err == nil {
				t.Fatal("want an error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q: want %q", msg, w)
				}
			}
			if strings.Contains(msg, "server.") || strings.Contains(msg, "not found in type") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line without Go type names", msg)
			}
			if name == "no near key" && strings.Contains(msg, "did you mean") {
				t.Errorf("error %q: no key is near enough to suggest", msg)
			}
		})
	}
}
