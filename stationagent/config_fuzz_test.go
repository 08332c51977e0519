package stationagent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadConfig: any stationagent.yaml reads or fails with one line that
// wraps ErrConfig, and never panics.
func FuzzReadConfig(f *testing.F) {
	for _, s := range []string{
		"server: tcp://swapd.example:1883\nstation_id: ST-1\nsecret: s3cret\ndriver: sim\nsim:\n  slots: 12\n",
		"server: ssl://h:8883\nstation_id: ST-1\nsecret: x\ndriver: modbus\nmodbus:\n  address: tcp://10.0.0.2:502\n",
		"server: ftp://x\nstation_id: -bad\n", "driver: sim\nsim:\n  slots: -4\n", "keepalive: forever\n",
		"server:\n  - tcp://a:1883\n  - ssl://b:8883\nstation_id: ST-1\nsecret: s\ndriver: sim\n",
		"server: [tcp://a:1, [x]]\n", "server: tcp://a:1,,ftp://b\n", "server: {a: 1}\n",
		"tls:\n  ca_file: /nonexistent\n", "outbox_limit: 1\n", "nope: 1\n", "[1,2]", "\x00", "",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "stationagent.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := ReadConfig(path, func(string) (string, bool) { return "", false })
		if err != nil {
			if !errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("ReadConfig error %q", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil && (!errors.Is(err, ErrConfig) || strings.Contains(err.Error(), "\n")) {
			t.Fatalf("Validate error %q", err)
		}
	})
}
