package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/role"
)

// TestDevRunsAndStops runs `converge dev` as a user would (free ports, a
// fresh data directory), sends an order through the printed curl target,
// checks the invariants with `converge check`, and stops it with a cancel,
// as Ctrl-C does.
func TestDevRunsAndStops(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--addr", "127.0.0.1:0", "--broker-port", "0", "--data", dir, "--log-level", "warn"},
			func(string) string { return "" }, w, io.Discard)
		w.Close()
	}()

	var lbURL, key string
	lines := bufio.NewScanner(out)
	for lines.Scan() && (lbURL == "" || key == "") {
		f := strings.Fields(lines.Text())
		switch {
		case len(f) == 3 && f[0] == "load" && f[1] == "balancer":
			lbURL = f[2]
		case len(f) == 3 && f[0] == "API" && f[1] == "key":
			key = f[2]
		}
	}
	if lbURL == "" || key == "" {
		t.Fatalf("dev printed no load balancer URL or API key (got %q, %q)", lbURL, key)
	}
	go io.Copy(io.Discard, out)

	// The demo catalogue is seeded on first start.
	req, _ := http.NewRequest("POST", lbURL+"/api/v1/orders",
		strings.NewReader(`{"customer_id":"c-1","items":[{"sku":"A-1","quantity":2}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST order: status %d, want 202", resp.StatusCode)
	}
	client.CloseIdleConnections()

	var report strings.Builder
	if err := run(ctx, []string{"check", "--data", dir, "--wait", "20s"}, func(string) string { return "" }, &report, io.Discard); err != nil {
		t.Fatalf("check: %v\n%s", err, report.String())
	}
	if !strings.Contains(report.String(), "OK   no order is PENDING") || strings.Contains(report.String(), "FAIL") {
		t.Fatalf("check report:\n%s", report.String())
	}

	// Orders still arriving when Ctrl-C comes: the shutdown publishes every
	// event it accepted, so the outboxes are drained once it has stopped.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest("POST", lbURL+"/api/v1/orders",
				strings.NewReader(fmt.Sprintf(`{"customer_id":"late-%d","items":[{"sku":"E-5","quantity":1}]}`, i)))
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("dev returned %v after the cancel, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dev did not stop within 30s of the cancel")
	}
	report.Reset()
	err = run(context.Background(), []string{"check", "--data", dir}, func(string) string { return "" }, &report, io.Discard)
	if !strings.Contains(report.String(), "OK   every outbox is drained") {
		t.Fatalf("check after the stop (%v):\n%s", err, report.String())
	}
}

// TestUsageErrors runs converge as main does on bad input: run itself prints
// nothing, main prints exactly one line "converge: <error>" on stderr, and
// the exit code is 2 (1 for an error that is not about usage). Nothing is
// created: the data directory given is not there afterwards.
func TestUsageErrors(t *testing.T) {
	env := func(k string) string {
		if k == "CONVERGE_GATEWAYS" {
			return "many"
		}
		return ""
	}
	tests := []struct {
		name string
		args []string
		env  func(string) string
		want string
		code int
	}{
		{"no command", nil, nil, "no command given", 2},
		{"unknown command", []string{"fly"}, nil, `unknown command "fly"`, 2},
		{"unknown flag", []string{"dev", "--nope"}, nil, "dev: flag provided but not defined: -nope; its flags are --access-log, --addr, --admin-key, --api-key,", 2},
		{"unknown flag of check", []string{"check", "--cache-ttl", "1s"}, nil, "check: flag provided but not defined: -cache-ttl; its flags are --data, --inventory-db, --order-db, --wait", 2},
		{"flag without value", []string{"dev", "--gateways"}, nil, "dev: flag needs an argument: -gateways", 2},
		{"flag of wrong type", []string{"dev", "--gateways", "two"}, nil, `dev: invalid value "two" for flag -gateways`, 2},
		{"stray argument", []string{"check", "extra"}, nil, `check: unexpected argument "extra"`, 2},
		{"bad env twin", []string{"dev"}, env, "CONVERGE_GATEWAYS", 2},
		{"bad log level", []string{"dev", "--log-level", "loud"}, nil, "log level", 2},
		{"no gateways", []string{"dev", "--gateways", "0"}, nil, "gateways must be 1 to 64, got 0", 2},
		{"too many gateways", []string{"dev", "--gateways", "65"}, nil, "gateways must be 1 to 64, got 65", 2},
		{"no cache TTL", []string{"dev", "--cache-ttl", "0"}, nil, "cache TTL must be positive", 2},
		{"unknown lb policy", []string{"dev", "--lb-policy", "bogus"}, nil, `lb policy must be least-loaded or round-robin, got "bogus"`, 2},
		{"broker port out of range", []string{"dev", "--broker-port", "70000"}, nil, "broker port must be 0 to 65535", 2},
		{"empty address", []string{"dev", "--addr", ""}, nil, "address is empty", 2},
		{"load without orders", []string{"load", "--api-key", "k", "--orders", "0"}, nil, "load: ", 2},
		{"load without API key", []string{"load"}, nil, "load: --api-key is required", 2},
		{"check without data", []string{"check"}, nil, "no order database", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := tt.env
			if getenv == nil {
				getenv = func(string) string { return "" }
			}
			data := filepath.Join(t.TempDir(), "data")
			args := tt.args
			if len(args) > 0 { // every command takes --data
				args = slices.Concat(args[:1], []string{"--data", data}, args[1:])
			}
			var stdout, stderr strings.Builder
			err := run(context.Background(), args, getenv, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run(%q) = %v, want an error containing %q", args, err, tt.want)
			}
			if stdout.Len() > 0 || stderr.Len() > 0 {
				t.Fatalf("run(%q) printed\nstdout: %q\nstderr: %q\nwant nothing: main prints the error", args, stdout.String(), stderr.String())
			}
			code := report(&stderr, err)
			if code != tt.code {
				t.Errorf("exit code: got %d, want %d", code, tt.code)
			}
			if want := "converge: " + err.Error() + "\n"; stderr.String() != want || strings.Count(want, "\n") != 1 {
				t.Errorf("main printed %q, want the one line %q", stderr.String(), want)
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the data directory %s exists after a usage error (stat: %v), want nothing created", data, err)
			}
		})
	}
}

// TestHelp: -h and --help print the flag list, exit 0 and print no error.
func TestHelp(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "commands:"},
		{[]string{"--help"}, "commands:"},
		{[]string{"dev", "-h"}, "-gateways int"},
		{[]string{"dev", "--help"}, "-lb-policy string"},
		{[]string{"dev", "--gateways", "0", "-h"}, "-cache-ttl duration"},
		{[]string{"check", "-h"}, "-wait duration"},
		{[]string{"check", "-h"}, "(--inventory-db from CONVERGE_INVENTORY_DB)"},
		{[]string{"load", "--help"}, "-orders int"},
		{[]string{"load", "--help"}, "(--api-key from CONVERGE_API_KEY)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := run(context.Background(), tt.args, func(string) string { return "" }, &stdout, &stderr)
			if err != nil && !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("run(%q) = %v, want nil or flag.ErrHelp", tt.args, err)
			}
			if code := report(&stderr, err); code != 0 {
				t.Errorf("exit code: got %d, want 0", code)
			}
			if !strings.Contains(stdout.String(), tt.want) {
				t.Errorf("stdout: got %q, want it to contain %q", stdout.String(), tt.want)
			}
			if stderr.Len() > 0 {
				t.Errorf("stderr: got %q, want nothing", stderr.String())
			}
		})
	}
}

func TestReport(t *testing.T) {
	tests := []struct {
		err  error
		want string
		code int
	}{
		{nil, "", 0},
		{flag.ErrHelp, "", 0},
		{usageError{"dev: bad"}, "converge: dev: bad\n", 2},
		{fmt.Errorf("dev: %w", errors.New("broker\nfailed")), "converge: dev: broker failed\n", 1},
	}
	for _, tt := range tests {
		var out strings.Builder
		if code := report(&out, tt.err); code != tt.code || out.String() != tt.want {
			t.Errorf("report(%v): printed %q and returned %d, want %q and %d", tt.err, out.String(), code, tt.want, tt.code)
		}
	}
}

// TestSecondSignalKills runs signalContext in a child process whose
// shutdown never ends: the first SIGINT cancels the context, a second one
// must kill the process the default way.
func TestSecondSignalKills(t *testing.T) {
	if os.Getenv("CONVERGE_TEST_SIGNAL_CHILD") == "1" {
		ctx, stop := signalContext()
		defer stop()
		fmt.Println("ready")
		<-ctx.Done()
		fmt.Println("shutting down")
		time.Sleep(time.Minute) // a shutdown that hangs
		os.Exit(3)
	}
	if runtime.GOOS == "windows" {
		t.Skip("no SIGINT to send on windows")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondSignalKills$")
	cmd.Env = append(os.Environ(), "CONVERGE_TEST_SIGNAL_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(out)
	next := func(want string) {
		t.Helper()
		if !lines.Scan() || lines.Text() != want {
			t.Fatalf("child printed %q (%v), want %q", lines.Text(), lines.Err(), want)
		}
	}
	next("ready")
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	next("shutting down")
	go io.Copy(io.Discard, out)

	// The child lets go of SIGINT just after its context is cancelled;
	// until then a SIGINT is swallowed, so keep sending.
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-exited:
			if cmd.ProcessState.ExitCode() != -1 {
				t.Fatalf("child exited with %v, want it killed by the second SIGINT", err)
			}
			return
		case <-deadline:
			t.Fatal("child still running 10s after a second SIGINT, want it killed")
		case <-time.After(50 * time.Millisecond):
			_ = cmd.Process.Signal(os.Interrupt)
		}
	}
}

// TestDevReset: --reset empties a data directory converge made, saying so,
// and the next start makes a new API key; it refuses while another
// converge holds the directory, and refuses a directory converge did not
// make, removing nothing in either case.
func TestDevReset(t *testing.T) {
	noEnv := func(string) string { return "" }
	write := func(t *testing.T, path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustExist := func(t *testing.T, path string) {
		t.Helper()
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s is gone (%v), want it kept", path, err)
		}
	}

	t.Run("held by another converge", func(t *testing.T) {
		dir := t.TempDir()
		lock, err := role.LockDataDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Release()
		write(t, filepath.Join(dir, "order.db"), "x")
		var stdout strings.Builder
		err = run(context.Background(), []string{"dev", "--data", dir, "--reset"}, noEnv, &stdout, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "in use by another converge") {
			t.Fatalf("dev --reset: %v, want a refusal naming the other converge", err)
		}
		mustExist(t, filepath.Join(dir, "order.db"))
	})

	t.Run("not a converge directory", func(t *testing.T) {
		dir := t.TempDir()
		write(t, filepath.Join(dir, "thesis.tex"), "x")
		err := run(context.Background(), []string{"dev", "--data", dir, "--reset"}, noEnv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "not a data directory converge made") {
			t.Fatalf("dev --reset: %v, want a refusal", err)
		}
		mustExist(t, filepath.Join(dir, "thesis.tex"))
	})

	t.Run("with a database of its own", func(t *testing.T) {
		err := run(context.Background(), []string{"dev", "--reset", "--order-db", "postgres://h/db"}, noEnv, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--reset clears only a data directory") {
			t.Fatalf("dev --reset --order-db: %v, want a usage error", err)
		}
	})

	t.Run("resets and starts afresh", func(t *testing.T) {
		dir := t.TempDir()
		write(t, filepath.Join(dir, role.LockFile), "1\n")
		write(t, filepath.Join(dir, "api-key"), "old-key\n")
		write(t, filepath.Join(dir, "order.db"), "not a database")
		write(t, filepath.Join(dir, "broker", "jetstream", "x"), "x")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out, w := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"dev", "--reset", "--addr", "127.0.0.1:0", "--broker-port", "0", "--data", dir, "--log-level", "warn"},
				noEnv, w, io.Discard)
			w.Close()
		}()
		var said, key string
		lines := bufio.NewScanner(out)
		for key == "" && lines.Scan() {
			if strings.HasPrefix(lines.Text(), "reset: ") {
				said = lines.Text()
			}
			if f := strings.Fields(lines.Text()); len(f) == 3 && f[0] == "API" && f[1] == "key" {
				key = f[2]
			}
		}
		go io.Copy(io.Discard, out)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("dev --reset: %v", err)
		}
		if !strings.Contains(said, dir) || !strings.Contains(said, "a new key") {
			t.Errorf("dev --reset said %q, want it to name %s and the new key", said, dir)
		}
		if key == "" || key == "old-key" {
			t.Errorf("API key after the reset: %q, want a new one", key)
		}
		if _, err := os.Stat(filepath.Join(dir, "broker", "jetstream", "x")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("broker/jetstream/x after the reset: %v, want it gone", err)
		}
	})
}
