package stationagent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigUnknownKeys: a typo in stationagent.yaml or in the modbus map
// file is named with its line and the nearest known key, without Go type
// names, as a config error (exit code 2).
func TestConfigUnknownKeys(t *testing.T) {
	const base = "server: tcp://localhost:1883\nstation_id: st-1\nsecret: s\n"
	for name, tc := range map[string]struct{ file, mapFile, want string }{
		"top level": {file: base + "driver: sim\nreconect_max: 1m\n", want: `line 5: unknown key "reconect_max" (did you mean "reconnect_max"?)`},
		"sim":       {file: base + "driver: sim\nsim:\n  slot: 4\n", want: `line 6: unknown key "slot" in sim (did you mean "slots"?)`},
		"map file": {
			file:    base + "driver: modbus\nmodbus:\n  url: tcp://127.0.0.1:502\n  map_file: map.yaml\n",
			mapFile: "slots: 4\nregisters:\n  strid: 16\n",
			want:    `line 3: unknown key "strid" in registers (did you mean "stride"?)`,
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "stationagent.yaml")
			if err := os.WriteFile(p, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.mapFile != "" {
				if err := os.WriteFile(filepath.Join(dir, "map.yaml"), []byte(tc.mapFile), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := LoadConfig(p)
			if err == nil || !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig = %v, want a config error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "not found in type") || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line with %q", msg, tc.want)
			}
		})
	}
}
