package main

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/bench"
	"github.com/convergehq/converge/internal/cache/rediscache/redistest"
	"github.com/convergehq/converge/internal/cluster/clustertest"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// TestBench runs converge bench with a tiny load and checks that every
// figure was measured and the ratio computed; it asserts no speed.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the system and three brokers: not in -short")
	}
	out, prof := filepath.Join(t.TempDir(), "out"), filepath.Join(t.TempDir(), "prof")
	args := []string{"bench", "--rounds", "1", "--orders", "200", "--concurrency", "8", "--limits-time", "200ms", "--dir", t.TempDir(), "--out", out}
	// A process takes one CPU profile at a time: under go test
	// -cpuprofile, the bench's own cannot run.
	canProfile := flag.Lookup("test.cpuprofile").Value.String() == ""
	if canProfile {
		args = append(args, "--profile", prof)
	} else {
		t.Log("go test -cpuprofile is set: converge bench --profile is not tested")
	}
	var stdout, stderr strings.Builder
	if err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run(%q): %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"bare chain (lb + 2 gateways + 202 stub)", "converge embedded", "ratio converge / bare chain",
		"disk: 8 KiB append + fsync", "SQLite order transaction", "JetStream publish, one by one", "JetStream publish, batch 256", "order -> final p99", "converge: machine CPU per order", "converge: machine context switches per order", "every invariant of converge check OK"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output has no line %q:\n%s", want, stdout.String())
		}
	}

	got := readBenchJSON(t, out)
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
	if len(got.Summary) != 15 {
		t.Errorf("summary has %d figures, want 15", len(got.Summary))
	}
	checkMeasured(t, got.Summary)
	svg, err := os.ReadFile(filepath.Join(out, bench.FileSVG))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(svg), "<svg") || !strings.Contains(string(svg), "converge embedded") {
		t.Errorf("%s is not the chart: %.200s", bench.FileSVG, svg)
	}
	// Each flow's profile, its samples labelled by role: at least one of
	// the parts the load drives (a tiny load leaves few samples to each;
	// TestPartsAreLabelledForProfiles checks every part's label).
	if canProfile {
		checkProfile(t, filepath.Join(prof, "round-1-bare-chain.pprof"), "lb", "gateway", "stub")
		checkProfile(t, filepath.Join(prof, "round-1-converge.pprof"), "lb", "gateway", "order", "inventory", "broker")
	}
}

// checkProfile fails t unless go tool pprof reads the CPU profile at path
// and finds samples labelled role=R for one of roles.
func checkProfile(t *testing.T, path string, roles ...string) {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("reading the CPU profiles needs go tool pprof: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), goCmd, "tool", "pprof", "-tags", "-tagfocus", "role", path).CombinedOutput()
	if err != nil {
		t.Errorf("go tool pprof -tags %s: %v\n%s", path, err, out)
		return
	}
	has := func(role string) bool { return regexp.MustCompile(`(?m)\): ` + role + `$`).Match(out) }
	if !slices.ContainsFunc(roles, has) {
		t.Errorf("go tool pprof -tags %s: want samples of one of the roles %v:\n%s", path, roles, out)
	}
}

// checkMeasured fails t for a figure measured in no round or not above
// zero. The CPU's figures come from /proc/stat: only Linux has them.
func checkMeasured(t *testing.T, figs []bench.Figure) {
	t.Helper()
	for _, f := range figs {
		fromProcStat := f.Unit == "%" || f.Unit == "switches" || strings.Contains(f.What, "CPU per")
		if len(f.Rounds) != 1 || !(f.Median > 0) && (runtime.GOOS == "linux" || !fromProcStat) {
			t.Errorf("figure %q: median %g over %d rounds, want > 0 over 1", f.What, f.Median, len(f.Rounds))
		}
	}
}

// benchJSON is what bench.json holds that the tests read.
type benchJSON struct {
	Rounds  []bench.Round  `json:"rounds"`
	Summary []bench.Figure `json:"summary"`
}

func readBenchJSON(t *testing.T, dir string) benchJSON {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, bench.FileJSON))
	if err != nil {
		t.Fatal(err)
	}
	var got benchJSON
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s: %v", bench.FileJSON, err)
	}
	return got
}

// clusterArgs are a valid cluster topology's flags, then args.
func clusterArgs(args ...string) []string {
	return append([]string{"--topology", "cluster", "--postgres", "postgres://127.0.0.1/x", "--cache", "redis://127.0.0.1:6379/0"}, args...)
}

// clusterBenchServers returns the test PostgreSQL's and Redis's URLs, or
// skips t, saying why, when either or pgbench is missing.
func clusterBenchServers(t *testing.T) (pg, cache string) {
	t.Helper()
	pg, cache = storetest.RequirePostgres(t), redistest.URL(t)
	if _, err := exec.LookPath("pgbench"); err != nil {
		t.Skipf("pgbench is not installed (Debian: apt install postgresql-client): %v", err)
	}
	return pg, cache
}

// TestBenchCluster runs converge bench on the cluster topology with a tiny
// load and two instance counts, and checks that every figure was measured,
// each flow converged and the ratio to pgbench was computed; it asserts
// no speed.
func TestBenchCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the cluster topology twice: not in -short")
	}
	pg, cache := clusterBenchServers(t)
	for _, kv := range clustertest.Env() { // the processes the bench starts inherit it
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	db, err := store.Open(context.Background(), pg)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	benchDBs := func() int {
		t.Helper()
		var n int
		if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM pg_database WHERE datname LIKE 'converge\_bench\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	benchKeys := func() int { return redistest.CountKeys(t, cache, "converge-bench-") }
	before, keysBefore := benchDBs(), benchKeys()
	out := filepath.Join(t.TempDir(), "out")
	args := []string{"bench", "--topology", "cluster", "--postgres", pg, "--cache", cache, "--binary", clustertest.Binary(t),
		"--instances", "2,1", "--rounds", "1", "--orders", "200", "--concurrency", "8", "--limits-time", "1s", "--dir", t.TempDir(), "--out", out}
	var stdout, stderr strings.Builder
	if err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("run(%q): %v\nstdout:\n%s\nstderr:\n%s", args, err, stdout.String(), stderr.String())
	}
	for _, want := range []string{"converge cluster, 1 of each service", "converge cluster, 2 of each service: ratio to pgbench",
		"pgbench order transaction, 8 clients", "PostgreSQL order transaction, order service code and pool (8 connections), 8 goroutines", "disk: 8 KiB append + fsync",
		"JetStream R3 publish, one by one", "JetStream R3 publish, batch 256", "1 of each service: machine CPU per order", "pgbench: machine CPU per commit", "every invariant of converge check OK"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output has no line %q:\n%s", want, stdout.String())
		}
	}
	got := readBenchJSON(t, out)
	if len(got.Rounds) != 1 || len(got.Rounds[0].Cluster) != 2 {
		t.Fatalf("%s: want 1 round of 2 cluster flows, got %+v", bench.FileJSON, got.Rounds)
	}
	r := got.Rounds[0]
	for i, f := range r.Cluster {
		if f.Instances != i+1 || f.Converged != 200 {
			t.Errorf("cluster flow %d: %d instances, %d converged; want %d and 200", i, f.Instances, f.Converged, i+1)
		}
		if want := f.Rate / r.Limits.Pgbench; f.Ratio != want {
			t.Errorf("%d instances: ratio = %g, want rate / pgbench = %g / %g = %g", f.Instances, f.Ratio, f.Rate, r.Limits.Pgbench, want)
		}
		checkParts(t, f)
	}
	if runtime.GOOS == "linux" && !strings.Contains(stdout.String(), "machine CPU per order by part") {
		t.Errorf("output has no table of the CPU by part:\n%s", stdout.String())
	}
	if len(got.Summary) != 22 {
		t.Errorf("summary has %d figures, want 22", len(got.Summary))
	}
	checkMeasured(t, got.Summary)
	// The flows' and limits' databases are dropped, their keys purged.
	if left := benchDBs() - before; left != 0 {
		t.Errorf("%d more converge_bench_ databases on the server after the bench, want 0", left)
	}
	if left := benchKeys() - keysBefore; left != 0 {
		t.Errorf("%d more converge-bench-* keys in Redis after the bench, want 0", left)
	}
}

// checkParts fails t unless f's CPU is split by part (on Linux, where
// /proc is): every process of the cluster and the client seen, the parts
// that work hardest for each order measured above zero (a tiny load
// leaves the others a few clock ticks), PostgreSQL too where its
// processes are on this machine, and the parts, less the rest of the
// machine, adding up to no more than the machine's figure with room for
// their slightly wider window: counting a process twice, or its
// children's time, would show.
func checkParts(t *testing.T, f bench.ClusterFlow) {
	t.Helper()
	if runtime.GOOS != "linux" {
		return
	}
	var parts time.Duration
	got := map[string]bench.PartCPU{}
	for _, p := range f.Parts {
		got[p.Part] = p
		if p.Part != "rest of the machine" {
			parts += p.PerUnit
		}
	}
	for _, part := range []string{"load client (converge bench)", "load balancer", "gateways", "order services", "inventory services", "brokers"} {
		if got[part].Processes == 0 {
			t.Errorf("%d instances: no process of %q seen (parts: %+v)", f.Instances, part, f.Parts)
		}
	}
	busy := []string{"order services", "inventory services", "brokers"}
	if got["PostgreSQL (every postgres process)"].Processes > 0 {
		busy = append(busy, "PostgreSQL (every postgres process)")
	}
	for _, part := range busy {
		if got[part].PerUnit <= 0 {
			t.Errorf("%d instances: CPU per order of %q = %s, want more than 0 (parts: %+v)", f.Instances, part, got[part].PerUnit, f.Parts)
		}
	}
	if parts > f.CPU.PerUnit*3/2 {
		t.Errorf("%d instances: the parts add up to %s per order, far more than the machine's %s (parts: %+v)", f.Instances, parts, f.CPU.PerUnit, f.Parts)
	}
}

// A cluster that fails to start fails the bench, which says where the
// processes' logs are kept.
func TestBenchClusterFailureKeepsLogs(t *testing.T) {
	pg, cache := clusterBenchServers(t)
	dir := t.TempDir()
	args := []string{"bench", "--topology", "cluster", "--postgres", pg, "--cache", cache, "--binary", "/bin/false",
		"--instances", "1", "--rounds", "1", "--orders", "10", "--dir", dir}
	var stdout, stderr strings.Builder
	err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
	if err == nil {
		t.Fatalf("run(%q) = nil error with a binary that exits at once, want the start's failure", args)
	}
	_, logs, ok := strings.Cut(err.Error(), "the processes' logs are kept in ")
	if !ok {
		t.Fatalf("error %q does not say where the logs are", err)
	}
	logs = strings.TrimSuffix(logs, ")")
	if entries, rerr := os.ReadDir(logs); rerr != nil || len(entries) == 0 || !strings.HasPrefix(logs, dir) {
		t.Errorf("logs directory %s: %d entries, %v; want the failed processes' logs under %s", logs, len(entries), rerr, dir)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	tests := []struct {
		name, want string
		args       []string
	}{
		{"unknown topology", `bench: topology must be embedded or cluster, got "mesh"`, []string{"--topology", "mesh"}},
		{"cluster without postgres", "bench: the cluster topology needs PostgreSQL: --postgres", []string{"--topology", "cluster", "--cache", "redis://127.0.0.1:6379/0"}},
		{"cluster on sqlite", "bench: the cluster topology needs PostgreSQL", []string{"--topology", "cluster", "--postgres", "sqlite:x.db", "--cache", "redis://127.0.0.1:6379/0"}},
		{"cluster without cache", "bench: the cluster topology needs Redis: --cache", []string{"--topology", "cluster", "--postgres", "postgres://127.0.0.1/x"}},
		{"instances not a number", `bench: instances: "two" is not a number`, []string{"--topology", "cluster", "--instances", "1,two"}},
		{"no instances", "bench: instances must each be 1 to 8, got 0", clusterArgs("--instances", "0")},
		{"too many instances", "bench: instances must each be 1 to 8, got 9", clusterArgs("--instances", "1,9")},
		{"instances twice", "bench: instances: 2 is given twice", clusterArgs("--instances", "1,2,2")},
		{"no pgbench", "bench: the cluster topology compares with pgbench: exec: \"no-such-pgbench\"", clusterArgs("--pgbench", "no-such-pgbench")},
		{"profile of the cluster", "bench: profile: the embedded topology only", clusterArgs("--profile", "prof")},
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

func TestMain(m *testing.M) {
	code := m.Run()
	clustertest.Cleanup() // the binary TestBenchCluster built
	os.Exit(code)
}
