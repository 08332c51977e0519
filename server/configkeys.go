package server

import (
	"reflect"

	"github.com/swapbridge/swapbridge/internal/yamlkeys"
)

// describeYAMLError turns a decoding error of the config file into one line
// for an operator: an unknown key is named with its line, its section and
// the nearest known key (`line 3: unknown key "http_adr" (did you mean
// "http_addr"?)`), never with a Go type name.
func describeYAMLError(err error) string {
	return yamlkeys.Describe(err, reflect.TypeFor[Config]())
}
