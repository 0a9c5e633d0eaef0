package main

import (
	"bufio"
	"context"
	"flag"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/cluster/clustertest"
	"github.com/convergehq/converge/internal/metrics/metricstest"
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
	for _, tc := range []struct {
		name            string
		env             string
		goDefault, cpus int
		want            int
		set             bool
	}{
		{"no limit", "", 2, 2, 2 + spareProcs, true},
		{"GOMAXPROCS set", "3", 3, 2, 3, false},
		{"GOMAXPROCS refused by Go", "abc", 2, 2, 2, false},
		{"a CPU limit below the CPUs", "", 2, 8, 2, false},
	} {
		if got, set := procs(env(tc.env), tc.goDefault, tc.cpus); got != tc.want || set != tc.set {
			t.Errorf("%s: procs = (%d, %t), want (%d, %t)", tc.name, got, set, tc.want, tc.set)
		}
	}
}

// The converge binary runs with the spare Ps unless GOMAXPROCS is set, as
// its own metrics say (go_sched_gomaxprocs_threads).
func TestBinaryRunsSpareProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the converge binary")
	}
	if f := flag.Lookup("test.cpu"); os.Getenv("GOMAXPROCS") != "" || (f != nil && f.Value.String() != "") {
		t.Skip("GOMAXPROCS or -cpu is set for this test, so Go's own default is unknown here")
	}
	goDefault := runtime.GOMAXPROCS(0)
	wantDefault := goDefault + spareProcs
	if goDefault < runtime.NumCPU() {
		wantDefault = goDefault // a CPU limit is in force: no spare Ps
	}
	bin := clustertest.Binary(t)
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GOMAXPROCS=") {
			base = append(base, kv)
		}
	}
	for _, tc := range []struct {
		name string
		env  []string
		want int
	}{
		{"Go's default", nil, wantDefault},
		{"GOMAXPROCS=3", []string{"GOMAXPROCS=3"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			cmd := exec.CommandContext(ctx, bin, "dev", "--addr", "127.0.0.1:0", "--broker-port", "0", "--data", t.TempDir(), "--log-level", "warn")
			cmd.Env = append(append(append([]string{}, base...), clustertest.Env()...), tc.env...)
			cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
			cmd.WaitDelay = 10 * time.Second // then killed
			out, w := io.Pipe()
			cmd.Stdout = w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() {
				_ = cmd.Wait()
				w.Close() // ends the reads below, whenever it exits
				close(exited)
			}()
			t.Cleanup(func() {
				cancel()
				<-exited
			})
			var lbURL string
			lines := bufio.NewScanner(out)
			for lbURL == "" && lines.Scan() {
				if f := strings.Fields(lines.Text()); len(f) == 3 && f[0] == "load" && f[1] == "balancer" {
					lbURL = f[2]
				}
			}
			go io.Copy(io.Discard, out) // until it exits
			if lbURL == "" {
				t.Fatal("converge dev printed no load balancer URL")
			}
			m := metricstest.Scrape(t, lbURL+"/metrics")
			if !m.Has("go_sched_gomaxprocs_threads") {
				t.Fatal("no go_sched_gomaxprocs_threads on the load balancer's /metrics")
			}
			if got := m.Sum("go_sched_gomaxprocs_threads"); got != float64(tc.want) {
				t.Errorf("converge dev runs GOMAXPROCS %v, want %d", got, tc.want)
			}
		})
	}
}
