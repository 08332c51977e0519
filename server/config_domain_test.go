package server

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigCommandAndBookingTimeouts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "swapd.yaml")
	os.WriteFile(file, []byte("domain:\n  command_timeout: 30s\n  charge_wait: 20m\n"), 0o600)
	f := NewFlags("swapd", io.Discard)
	if err := f.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(map[string]string{"SWAPD_COMMAND_RETRY": "500ms", "SWAPD_OFFLINE_FAIL": "3m", "SWAPD_CHARGE_WAIT": "5m"}))
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Domain
	got := []time.Duration{time.Duration(d.CommandTimeout), time.Duration(d.CommandRetry), time.Duration(d.OfflineFail), time.Duration(d.ChargeWait)}
	want := []time.Duration{30 * time.Second, 500 * time.Millisecond, 3 * time.Minute, 5 * time.Minute}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("timeouts (command_timeout, command_retry, offline_fail, charge_wait) = %v, want %v", got, want)
			break
		}
	}

	def := Defaults().Domain
	if time.Duration(def.CommandTimeout) != 2*time.Minute || time.Duration(def.CommandRetry) != 2*time.Second ||
		time.Duration(def.OfflineFail) != 10*time.Minute || time.Duration(def.ChargeWait) != time.Hour {
		t.Errorf("defaults %+v", def)
	}

	f = NewFlags("swapd", io.Discard)
	f.Parse(nil)
	_, err = Load(f, envMap(map[string]string{"SWAPD_COMMAND_TIMEOUT": "-1s"}))
	if err == nil || !strings.Contains(err.Error(), "command_timeout") {
		t.Errorf("negative command timeout: err %v", err)
	}
	_, err = Load(f, envMap(map[string]string{"SWAPD_COMMAND_TIMEOUT": "soon"}))
	if err == nil || !strings.Contains(err.Error(), "SWAPD_COMMAND_TIMEOUT") {
		t.Errorf("bad duration: err %v", err)
	}
}

func TestConfigLimits(t *testing.T) {
	def := Defaults().Limits
	if def.MQTTMaxClients != 10000 || def.HTTPRate != 100 || def.HTTPBurst != 400 || def.MQTTPublishRate != 50 ||
		def.MQTTPublishBurst != 200 || def.MQTTAuthFailures != 10 || time.Duration(def.MQTTAuthBlock) != 5*time.Minute {
		t.Errorf("limit defaults %+v", def)
	}
	file := filepath.Join(t.TempDir(), "swapd.yaml")
	os.WriteFile(file, []byte("limits:\n  mqtt_max_clients: 50\n  http_rate: 5\n"), 0o600)
	f := NewFlags("swapd", io.Discard)
	if err := f.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(map[string]string{"SWAPD_HTTP_RATE_LIMIT": "-1", "SWAPD_HTTP_RATE_BURST": "9",
		"SWAPD_MQTT_PUBLISH_RATE": "-1", "SWAPD_MQTT_AUTH_FAILURES": "3", "SWAPD_MQTT_AUTH_BLOCK": "1m"}))
	if err != nil {
		t.Fatal(err)
	}
	if l := cfg.Limits; l.MQTTPublishRate != -1 || l.MQTTAuthFailures != 3 || time.Duration(l.MQTTAuthBlock) != time.Minute {
		t.Errorf("mqtt limits %+v", l)
	}
	if l := cfg.Limits; l.MQTTMaxClients != 50 || l.HTTPRate != -1 || l.HTTPBurst != 9 {
		t.Errorf("limits %+v, want 50 from the file, -1 and 9 from the environment", l)
	}
	f = NewFlags("swapd", io.Discard)
	f.Parse(nil)
	if _, err := Load(f, envMap(map[string]string{"SWAPD_MQTT_MAX_CLIENTS": "-5"})); err == nil || !strings.Contains(err.Error(), "mqtt_max_clients") {
		t.Errorf("negative max clients: %v", err)
	}
}

func TestConfigMQTTPipeline(t *testing.T) {
	if d := Defaults().Limits.MQTTPipeline; d != 0 {
		t.Errorf("default mqtt_pipeline %d, want 0 (the broker's default)", d)
	}
	file := filepath.Join(t.TempDir(), "swapd.yaml")
	os.WriteFile(file, []byte("limits:\n  mqtt_pipeline: 8\n"), 0o600)
	f := NewFlags("swapd", io.Discard)
	if err := f.Parse([]string{"--config", file}); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(f, envMap(nil))
	if err != nil || cfg.Limits.MQTTPipeline != 8 {
		t.Fatalf("mqtt_pipeline from the file: %d, %v; want 8", cfg.Limits.MQTTPipeline, err)
	}
	cfg, err = Load(f, envMap(map[string]string{"SWAPD_MQTT_PIPELINE": "-1"}))
	if err != nil || cfg.Limits.MQTTPipeline != -1 {
		t.Fatalf("SWAPD_MQTT_PIPELINE=-1: %d, %v; want -1 over the file's 8", cfg.Limits.MQTTPipeline, err)
	}
	if _, err := Load(f, envMap(map[string]string{"SWAPD_MQTT_PIPELINE": "lots"})); err == nil || !strings.Contains(err.Error(), "SWAPD_MQTT_PIPELINE") {
		t.Errorf("bad SWAPD_MQTT_PIPELINE: err %v", err)
	}
}
