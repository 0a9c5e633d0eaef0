// Command converge runs the converge system and its tools.
//
//	converge dev        run everything: in one process (embedded broker,
//	                    SQLite), or as a cluster of processes
//	converge order      the order service (one instance)
//	converge inventory  the inventory service (one instance)
//	converge gateway    an API gateway
//	converge lb         the load balancer
//	converge broker     a NATS JetStream node
//	converge setup      create the streams and consumers, once
//	converge check      verify the system's invariants
//	converge load       place orders and measure acceptance and convergence
//	converge bench      converge against the bare chain and its parts' limits
//	converge probe      check an endpoint once (container health checks)
//	converge trace      an order's way through the system, step by step
//	converge dlq        list, show, replay and discard dead letters
//
// Every flag also reads from a CONVERGE_* environment variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"

	"github.com/convergehq/converge/internal/telemetry"
)

func main() {
	if n, ok := procs(os.Getenv, runtime.GOMAXPROCS(0), runtime.NumCPU()); ok {
		runtime.GOMAXPROCS(n)
	}
	ctx, stop := signalContext()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(os.Stderr, err))
}

// spareProcs is how many more Ps (the Go scheduler's slots for running Go
// code) converge runs than the CPUs it may use. A goroutine waiting in
// fsync (a SQLite commit, a broker write) keeps its P until the
// scheduler's monitor takes it back, one monitor tick later at the
// soonest (20µs, and up to 10ms), and meanwhile a CPU can sit idle while
// goroutines wait to run. With two spare Ps, converge dev on 2 CPUs
// converged 1,130-1,360 orders/s under a closed load (converge load
// --orders 8000 --concurrency 32) instead of 830-1,010, with the CPUs
// 94-96% busy instead of 82% (README, "Measured").
const spareProcs = 2

// procs returns the GOMAXPROCS converge should run with, given Go's own
// choice and the CPUs the process may run on, and whether to set it. It
// leaves Go's choice alone when the GOMAXPROCS environment variable is set
// (even to a value Go refused), and when Go chose fewer Ps than CPUs: a
// container's CPU limit is in force, and Ps beyond it would run more
// threads at once than the limit allows, to be throttled for it.
func procs(getenv func(string) string, goDefault, cpus int) (int, bool) {
	if getenv("GOMAXPROCS") != "" || goDefault < cpus {
		return goDefault, false
	}
	return goDefault + spareProcs, true
}

// signalContext is cancelled by the first SIGINT or SIGTERM, which starts a
// graceful shutdown. It then lets go of the signals, so that a second one
// kills the process the default way when the shutdown hangs.
func signalContext() (context.Context, context.CancelFunc) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	return ctx, stop
}

// report prints err as the one line a user reads, "converge: <error>", and
// returns the exit code: 0 for success or a request for help (the flag list
// is already printed), 2 for usage errors, 1 for everything else.
func report(stderr io.Writer, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "converge:", oneLine(err.Error()))
	return exitCode(err)
}

// exitCode is 2 for usage errors, 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// oneLine joins the lines of a message that has more than one, so the
// error is always printed as a single line.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }), " ")
}

type usageError struct{ msg string }

func (u usageError) Error() string { return u.msg }

const usage = `usage: converge <command> [flags]

commands:
  dev        run the whole system: in one process (load balancer, 2 API gateways,
             order and inventory services, SQLite, in-process caches, embedded NATS
             JetStream), or with --topology cluster as separate processes
  check      verify the invariants over the databases; exit 1 on any FAIL
  load       place a bounded number of orders and measure acceptance and convergence
  bench      measure converge against the bare chain (load balancer and gateways
             before a stub) under the same load, and the limits of its parts
  probe      check once that an HTTP endpoint answers 2xx or a TCP port accepts
             (the health check of a container without a shell)
  trace      print an order's way through the system, step by step, with the
             time of each (converge trace ORDER_ID)
  dlq        dead letters: ls, show, replay, discard (through the admin API)

roles (one process each, for the production topology):
  order      the order service
  inventory  the inventory service
  gateway    an API gateway
  lb         the load balancer
  broker     a NATS JetStream node, alone or in a cluster
  setup      create the streams and consumers once, then exit

Run 'converge <command> -h' for the flags of a command.`

// run runs the command args name. It prints nothing for a usage error: the
// error itself, printed by main, is the one line the user reads.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no command given; 'converge help' lists the commands"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "check":
		return runCheck(ctx, rest, getenv, stdout, stderr)
	case "load":
		return runLoad(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "setup":
		return runSetup(ctx, rest, getenv, stdout, stderr)
	case "order":
		return runRole(ctx, orderCommand(), rest, getenv, stdout, stderr)
	case "inventory":
		return runRole(ctx, inventoryCommand(), rest, getenv, stdout, stderr)
	case "gateway":
		return runRole(ctx, gatewayCommand(), rest, getenv, stdout, stderr)
	case "lb":
		return runRole(ctx, lbCommand(), rest, getenv, stdout, stderr)
	case "broker":
		return runRole(ctx, brokerCommand(), rest, getenv, stdout, stderr)
	case "probe":
		return runProbe(ctx, rest, getenv, stdout, stderr)
	case "trace":
		return runTrace(ctx, rest, getenv, stdout, stderr)
	case "dlq":
		return runDLQ(ctx, rest, getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return usageError{fmt.Sprintf("unknown command %q; 'converge help' lists the commands", cmd)}
}

// newFlagSet returns a flag set that prints nothing while parsing: a bad
// flag comes back from parseFlags as an error of one line, and the flag list
// is printed for -h or --help only.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("converge "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseFlags parses args, then sets each flag not given on the command line
// from its CONVERGE_<NAME> twin (dashes become underscores). For -h or
// --help it prints the flag list on help and returns flag.ErrHelp.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string, help io.Writer) error {
	rest, err := parseFlagsArgs(fs, args, getenv, help)
	if err == nil && len(rest) > 0 {
		return usageError{fmt.Sprintf("%s: unexpected argument %q", command(fs), rest[0])}
	}
	return err
}

// parseFlagsArgs is parseFlags for a command that also takes arguments:
// it returns them, wherever they stand among the flags.
func parseFlagsArgs(fs *flag.FlagSet, args []string, getenv func(string) string, help io.Writer) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				printFlags(help, fs)
				return nil, err
			}
			msg := fmt.Sprintf("%s: %v", command(fs), err)
			if strings.HasPrefix(err.Error(), "flag provided but not defined") {
				msg += "; its flags are " + flagNames(fs)
			}
			return nil, usageError{msg}
		}
		if fs.NArg() == 0 {
			break
		}
		rest = append(rest, fs.Arg(0))
		args = fs.Args()[1:]
	}
	return rest, setFromEnv(fs, getenv)
}

// setFromEnv sets each flag not given on the command line from its
// CONVERGE_<NAME> twin.
func setFromEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		env := envName(f.Name)
		if v := getenv(env); v != "" {
			if serr := f.Value.Set(v); serr != nil {
				err = usageError{fmt.Sprintf("%s: %s=%q: %v", command(fs), env, v, serr)}
			}
		}
	})
	return err
}

// envName is the environment twin of a flag: CONVERGE_CACHE_TTL for cache-ttl.
func envName(flagName string) string {
	return "CONVERGE_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// command is the subcommand fs parses for, such as "dev", the prefix of its
// errors.
func command(fs *flag.FlagSet) string { return strings.TrimPrefix(fs.Name(), "converge ") }

// flagNames lists the flags of fs, such as "--addr, --data".
func flagNames(fs *flag.FlagSet) string {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, "--"+f.Name) })
	return strings.Join(names, ", ")
}

// printFlags writes the flag list of fs to w.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	// The example of an environment twin is a flag of this command, one
	// with a dash if it has one.
	var example string
	fs.VisitAll(func(f *flag.Flag) {
		if example == "" || (!strings.Contains(example, "-") && strings.Contains(f.Name, "-")) {
			example = f.Name
		}
	})
	fmt.Fprintf(w, "usage: %s [flags]\n\nEach flag also reads from its CONVERGE_* environment variable (--%s from %s).\n\nflags:\n",
		fs.Name(), example, envName(example))
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("log level %q: want debug, info, warn or error", level)}
	}
	// Records logged with a context carry its trace and request ids.
	return telemetry.Logger(slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))), nil
}
