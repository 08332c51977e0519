package yamlkeys

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

type inner struct {
	Hold  time.Duration `yaml:"hold"`
	Ready float64       `yaml:"ready_soc"`
}

type domain struct {
	Ready float64 `yaml:"ready_soc"`
}

type root struct {
	Addr   string           `yaml:"http_addr"`
	Domain domain           `yaml:"domain"`
	Opt    *inner           `yaml:"optional"`
	List   []inner          `yaml:"list"`
	ByName map[string]inner `yaml:"by_name"`
}

func TestDescribe(t *testing.T) {
	for doc, want := range map[string]string{
		"http_adr: x\n":                   `line 1: unknown key "http_adr" (did you mean "http_addr"?)`,
		"domain:\n  redy_soc: 1\n":        `line 2: unknown key "redy_soc" in domain (did you mean "ready_soc"?)`,
		"optional:\n  hodl: 1s\n":         `line 2: unknown key "hodl" (did you mean "hold"?)`,
		"list:\n  - hold: 1s\n    x: 1\n": `line 3: unknown key "x"`,
		"teleport: 1\nhttp_addr: 2\n":     `line 1: unknown key "teleport"`,
		"http_addr: [1]\n":                "line 1: cannot unmarshal !!seq into string",
	} {
		dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
		dec.KnownFields(true)
		var v root
		err := dec.Decode(&v)
		if err == nil {
			t.Fatalf("%q: want an error", doc)
		}
		if got := Describe(err, reflect.TypeFor[root]()); got != want {
			t.Errorf("%q: got %q, want %q", doc, got, want)
		}
	}
}

func TestNearest(t *testing.T) {
	known := []string{"data_dir", "mqtt_addr", "http_addr", "admin_token"}
	for key, want := range map[string]string{
		"http_adr": "http_addr", "mqtt_addr ": "mqtt_addr", "admintoken": "admin_token",
		"DATA_DIR": "", "x": "", "ssl": "",
	} {
		if got := Nearest(key, known); got != want {
			t.Errorf("Nearest(%q) = %q, want %q", key, got, want)
		}
	}
}
