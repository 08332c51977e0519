package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/swapbridge/swapbridge/bench"
)

func TestRunSteadyJSONAgainstEmbeddedServer(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	var out, errOut bytes.Buffer
	args := []string{"steady", "--stations", "5", "--rate", "50", "--duration", "1s", "--ws", "3", "--json", "--progress", "off"}
	if err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatalf("run: %v\n%s", err, errOut.String())
	}
	var rep bench.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("--json output: %v\n%s", err, out.String())
	}
	if rep.Scenario != "steady" || len(rep.Steps) != 1 || rep.Steps[0].Acked == 0 || rep.Steps[0].Delivered != rep.Steps[0].Expected {
		t.Fatalf("report: %+v", rep)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"sprint"},
		{"steady", "extra"},
		{"steady", "--progress", "sometimes"},
		{"steady", "--ws", "2", "--ws-all", "3"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, func(string) string { return "" }, &out, &errOut)
		if err == nil {
			t.Errorf("%v: want an error", args)
			continue
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error must be one line: %q", args, err)
		}
	}
	err := run(context.Background(), []string{"steady", "--server", "http://127.0.0.1:1", "--mqtt", "127.0.0.1:1"}, func(string) string { return "" }, new(bytes.Buffer), new(bytes.Buffer))
	if err == nil || !strings.Contains(err.Error(), "admin token") {
		t.Errorf("an external server without a token: %v", err)
	}
	if err := run(context.Background(), []string{"rush", "--baseline"}, func(string) string { return "" }, new(bytes.Buffer), new(bytes.Buffer)); err == nil || errors.Is(err, errFailed) {
		t.Errorf("rush against the baseline must be refused: %v", err)
	}
}
