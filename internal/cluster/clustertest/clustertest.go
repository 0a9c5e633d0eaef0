// Package clustertest builds the converge binary for tests that start the
// cluster topology, once per test process.
package clustertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var build struct {
	once sync.Once
	dir  string
	bin  string
	err  error
	out  []byte
}

// Binary returns the path of cmd/converge built for this test process (with
// -race when the tests run with -race, reusing the packages the test build
// compiled), building it on first use. Call Cleanup from TestMain to remove it.
func Binary(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "converge-bin-")
		if build.err != nil {
			return
		}
		build.bin = filepath.Join(build.dir, "converge")
		args := []string{"build", "-o", build.bin}
		if race {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "github.com/convergehq/converge/cmd/converge")...)
		build.out, build.err = cmd.CombinedOutput()
	})
	if build.err != nil {
		t.Fatalf("build converge: %v\n%s", build.err, build.out)
	}
	return build.bin
}

// Env is what the environment of a process started from Binary should add:
// with -race, GORACE with atexit_sleep_ms=0 before any options already set
// (a later one wins, so a GORACE of the caller's own still can). The race
// runtime otherwise sleeps a second at every exit, and a cluster stops in
// two tiers (the brokers last): two seconds of every test.
func Env() []string {
	if !race {
		return nil
	}
	return []string{"GORACE=" + strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE"))}
}

// Cleanup removes the binary Binary built, if any.
func Cleanup() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}
