package server

import (
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "swapd.yaml")
	os.WriteFile(file, []byte("data_dir: /from/file\nmqtt_addr: \":1111\"\nhttp_addr: \":2222\"\ndomain:\n  booking_hold: 5m\n  ready_soc: 80\n"), 0o600)

	f := NewFlags("swapd", io.Discard)
	if err := f.Parse([]string{"--config", file, "--http-addr", ":4444"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(map[string]string{"SWAPD_MQTT_ADDR": ":3333", "SWAPD_BOOKING_HOLD": "20m"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/from/file" {
		t.Errorf("data dir from file: got %q", cfg.DataDir)
	}
	if cfg.MQTTAddr != ":3333" {
		t.Errorf("env must override file: got %q", cfg.MQTTAddr)
	}
	if cfg.HTTPAddr != ":4444" {
		t.Errorf("flag must override file: got %q", cfg.HTTPAddr)
	}
	if time.Duration(cfg.Domain.BookingHold) != 20*time.Minute {
		t.Errorf("SWAPD_BOOKING_HOLD must override file: got %v", time.Duration(cfg.Domain.BookingHold))
	}
	if cfg.Domain.ReadySoC != 80 || cfg.Domain.HealthFloor != 70 {
		t.Errorf("file value and default: got ready %v floor %v", cfg.Domain.ReadySoC, cfg.Domain.HealthFloor)
	}
}

func TestConfigDefaults(t *testing.T) {
	f := NewFlags("swapd", io.Discard)
	f.Parse(nil)
	cfg, err := Load(f, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "./data" || cfg.MQTTAddr != ":1883" || cfg.HTTPAddr != ":8000" {
		t.Errorf("contract defaults: got %q %q %q", cfg.DataDir, cfg.MQTTAddr, cfg.HTTPAddr)
	}
	if time.Duration(cfg.Domain.BookingHold) != 15*time.Minute {
		t.Errorf("booking hold default: %v", cfg.Domain.BookingHold)
	}
}

func TestConfigErrorsAreOneLine(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]struct {
		file string
		env  map[string]string
		want string
	}{
		"unknown key":  {file: "data_dirr: x\n", want: "data_dirr"},
		"bad duration": {env: map[string]string{"SWAPD_BOOKING_HOLD": "soon"}, want: "SWAPD_BOOKING_HOLD"},
		"bad level":    {env: map[string]string{"SWAPD_LOG_LEVEL": "loud"}, want: "log_level"},
		"bad yaml":     {file: "domain: [\n", want: "config"},
		"tls half set": {env: map[string]string{"SWAPD_MQTT_TLS_ADDR": ":8883"}, want: "cert_file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := NewFlags("swapd", io.Discard)
			var args []string
			if tc.file != "" {
				p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
				os.WriteFile(p, []byte(tc.file), 0o600)
				args = []string{"--config", p}
			}
			if err := f.Parse(args); err != nil {
				t.Fatal(err)
			}
			_, err := Load(f, envMap(tc.env))
			if err == nil {
				t.Fatal("want an error")
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line mentioning %q", err, tc.want)
			}
		})
	}
}

// TestExampleConfigIsTrue keeps configs/swapd.example.yaml honest: it loads
// without error and states exactly the defaults.
func TestExampleConfigIsTrue(t *testing.T) {
	cfg := Defaults()
	if err := LoadFile(&cfg, "../configs/swapd.example.yaml"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Defaults()) {
		t.Errorf("the example config differs from the defaults:\nexample  %+v\ndefaults %+v", cfg, Defaults())
	}
}
