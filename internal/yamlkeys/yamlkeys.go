// Package yamlkeys turns yaml.v3 decoding errors of a config file into one
// line for an operator: an unknown key is named with its line, its section
// and the nearest known key, never with a Go type name.
package yamlkeys

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlUnknownField matches one of yaml.v3's KnownFields messages, e.g.
// "line 3: field http_adr not found in type server.Config".
var yamlUnknownField = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)

// Describe turns err, from decoding YAML into a value of root's type with
// KnownFields(true), into one line: an unknown key becomes
// `line 3: unknown key "http_adr" (did you mean "http_addr"?)`, with
// " in SECTION" for a nested mapping.
func Describe(err error, root reflect.Type) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return oneLine(err.Error())
	}
	sections := Sections(root)
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		m := yamlUnknownField.FindStringSubmatch(e)
		if m == nil {
			msgs = append(msgs, oneLine(e))
			continue
		}
		line, key, typ := m[1], m[2], m[3]
		sec, ok := sections[typ]
		if !ok {
			msgs = append(msgs, fmt.Sprintf("line %s: unknown key %q", line, key))
			continue
		}
		msg := fmt.Sprintf("line %s: unknown key %q", line, key)
		if sec.Path != "" {
			msg += " in " + sec.Path
		}
		if s := Nearest(key, sec.Keys); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		msgs = append(msgs, msg)
	}
	return strings.Join(msgs, "; ")
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// Section is one mapping of the config file: its dotted path ("" for
// the top level, or for a type used in several places) and the keys it
// accepts, in declaration order.
type Section struct {
	Path string
	Keys []string
}

// Sections maps the Go type of every mapping reachable from root (as
// yaml.v3 names it, e.g. "server.DomainConfig") to its section.
func Sections(root reflect.Type) map[string]Section {
	out := map[string]Section{}
	var walk func(t reflect.Type, path string)
	walk = func(t reflect.Type, path string) {
		if sec, seen := out[t.String()]; seen {
			if sec.Path != path { // one type in several sections: name none
				sec.Path = ""
				out[t.String()] = sec
			}
			return
		}
		sec := Section{Path: path}
		out[t.String()] = sec
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" || !f.IsExported() {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			sec.Keys = append(sec.Keys, name)
			ft := f.Type
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice || ft.Kind() == reflect.Map {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
				p := name
				if path != "" {
					p = path + "." + name
				}
				walk(ft, p)
			}
		}
		out[t.String()] = sec
	}
	for root.Kind() == reflect.Pointer {
		root = root.Elem()
	}
	walk(root, "")
	return out
}

// Nearest returns the known key closest to key by edit distance, or "" when
// none is close enough to be a likely typo.
func Nearest(key string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		d := editDistance(key, k)
		if bestD < 0 || d < bestD {
			best, bestD = k, d
		}
	}
	if bestD < 0 || bestD > max(2, len(key)/3) {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
