package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/bench"
)

// TestBench runs converge bench with a tiny load and checks that every
// figure was measured and the ratio computed; it asserts no speed.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the system and three brokers: not in -short")
	}
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"bench", "--rounds", "1", "--orders", "200", "--concurrency", "8", "--limits-time", "200ms", "--dir", t.TempDir(), "--out", out}
	var stdout, stderr strings.Builder
	if err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run(%q): %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"bare chain (lb + 2 gateways + 202 stub)", "converge embedded", "ratio converge / bare chain",
		"disk: 8 KiB append + fsync", "SQLite order transaction", "JetStream publish, one by one", "JetStream publish, batch 256", "order -> final p99", "every invariant of converge check OK"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output has no line %q:\n%s", want, stdout.String())
		}
	}

	raw, err := os.ReadFile(filepath.Join(out, bench.FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Rounds  []bench.Round  `json:"rounds"`
		Summary []bench.Figure `json:"summary"`
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s: %v", bench.FileJSON, err)
	}
	if len(got.Rounds) != 1 {
		t.Fatalf("%s has %d rounds, want 1", bench.FileJSON, len(got.Rounds))
	}
	r := got.Rounds[0]
	if r.Bare.Converged != 200 || r.Real.Converged != 200 {
		t.Errorf("converged: bare chain %d, converge %d, want 200 each", r.Bare.Converged, r.Real.Converged)
	}
	if want := r.Real.Rate / r.Bare.Rate; r.Ratio != want {
		t.Errorf("ratio = %g, want converge / bare chain = %g / %g = %g", r.Ratio, r.Real.Rate, r.Bare.Rate, want)
	}
	if len(got.Summary) < 9 {
		t.Errorf("summary has %d figures, want 9", len(got.Summary))
	}
	for _, f := range got.Summary {
		if !(f.Median > 0) || len(f.Rounds) != 1 {
			t.Errorf("figure %q: median %g over %d rounds, want > 0 over 1", f.What, f.Median, len(f.Rounds))
		}
	}
	svg, err := os.ReadFile(filepath.Join(out, bench.FileSVG))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "converge embedded") {
		t.Errorf("%s is not the chart: %.200s", bench.FileSVG, svg)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name, want string
		args       []string
	}{
		{"cluster", "bench: --topology cluster is not yet supported", []string{"--topology", "cluster"}},
		{"unknown topology", `bench: --topology must be embedded, got "mesh"`, []string{"--topology", "mesh"}},
		{"no rounds", "bench: rounds must be 1 to 100, got 0", []string{"--rounds", "0"}},
		{"no limits time", "bench: limits time must be", []string{"--limits-time", "0s"}},
		{"no orders", "bench: orders must be 1 to", []string{"--orders", "0"}},
		{"unknown flag", "bench: flag provided but not defined: -nope; its flags are --access-log,", []string{"--nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(context.Background(), append([]string{"bench"}, tt.args...), func(string) string { return "" }, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("bench %q = %v, want an error containing %q", tt.args, err, tt.want)
			}
			if stdout.Len() > 0 || stderr.Len() > 0 {
				t.Errorf("bench %q printed %q, %q; want nothing: main prints the error", tt.args, stdout.String(), stderr.String())
			}
			var line strings.Builder
			if code := report(&line, err); code != 2 || strings.Count(line.String(), "\n") != 1 {
				t.Errorf("bench %q: exit %d, printed %q; want 2 and one line", tt.args, code, line.String())
			}
		})
	}
}
