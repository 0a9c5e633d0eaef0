package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cluster/clustertest"
)

func TestProcs(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMAXPROCS" {
				return v
			}
			return ""
		}
	}
	if got := procs(env(""), 2); got != 2+spareProcs {
		t.Errorf("procs with GOMAXPROCS unset on 2 CPUs: %d, want %d", got, 2+spareProcs)
	}
	if got := procs(env("3"), 3); got != 3 {
		t.Errorf("procs with GOMAXPROCS=3: %d, want 3 as Go set it", got)
	}
}

// The converge binary runs with the spare Ps unless GOMAXPROCS is set, as
// its own metrics say (go_sched_gomaxprocs_threads).
func TestBinaryRunsSpareProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the converge binary")
	}
	bin := clustertest.Binary(t)
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			base = append(base, kv)
		}
	}
	goDefault := runtime.GOMAXPROCS(0)
	if os.Getenv("GOMAXPROCS") != "" {
		t.Skip("this test's own GOMAXPROCS is set, so Go's default is unknown here")
	}
	for _, tc := range []struct {
		env  []string
		want int
	}{
		{nil, goDefault + spareProcs},
		{[]string{"GOMAXPROCS=3"}, 3},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, bin, "dev", "--addr", "127.0.0.1:0", "--broker-port", "0", "--data", t.TempDir(), "--log-level", "warn")
		cmd.Env = append(append([]string{}, base...), tc.env...)
		cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lbURL string
		lines := bufio.NewScanner(out)
		for lbURL == "" && lines.Scan() {
			if f := strings.Fields(lines.Text()); len(f) == 3 && f[0] == "load" && f[1] == "balancer" {
				lbURL = f[2]
			}
		}
		go io.Copy(io.Discard, out)
		got := -1
		if lbURL != "" {
			got = gomaxprocs(t, lbURL+"/metrics")
		}
		cancel()
		_ = cmd.Wait()
		if lbURL == "" {
			t.Fatalf("env %v: converge dev printed no load balancer URL", tc.env)
		}
		if got != tc.want {
			t.Errorf("env %v: converge dev runs GOMAXPROCS %d, want %d", tc.env, got, tc.want)
		}
	}
}

// gomaxprocs reads go_sched_gomaxprocs_threads from a metrics page.
func gomaxprocs(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if name, value, ok := strings.Cut(lines.Text(), " "); ok && strings.HasPrefix(name, "go_sched_gomaxprocs_threads") {
			n, err := strconv.Atoi(value)
			if err != nil {
				t.Fatalf("go_sched_gomaxprocs_threads %q: %v", value, err)
			}
			return n
		}
	}
	t.Fatalf("no go_sched_gomaxprocs_threads on %s (%v)", url, lines.Err())
	return 0
}
