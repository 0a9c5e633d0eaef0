package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/load"
)

func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := load.DefaultConfig()
	fs := newFlagSet("load")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "base URL of the system (the load balancer); no other URL is ever requested")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key (default: the one converge dev keeps in --data)")
	dataDir := fs.String("data", "./converge-data", "data directory of converge dev, read only for its api-key file when --api-key is not given")
	fs.IntVar(&cfg.Orders, "orders", cfg.Orders, fmt.Sprintf("orders to place, 1 to %d; with --duration, the most", load.MaxOrders))
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, fmt.Sprintf("closed model: workers placing orders, 1 to %d; in both models, as many follow the orders to their outcomes", load.MaxConcurrency))
	fs.IntVar(&cfg.SKUs, "skus", cfg.SKUs, "SKUs LOAD-1..LOAD-n the orders draw from")
	stock := &optionalInt{}
	fs.Var(stock, "stock", "`units` available per SKU at the start of the run (default: enough to confirm about 80% of the orders)")
	fs.IntVar(&cfg.Items, "items", cfg.Items, "most distinct SKUs in one order (each order takes 1 to this many, 1 to 3 units each)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "stop the whole run after this long, reporting what is still PENDING; with --duration and no --timeout, a minute more than the duration")
	fs.Float64Var(&cfg.Rate, "rate", 0, fmt.Sprintf("open model: start this many orders a second on a schedule, whatever the answers (up to %d; the report says if the client fell behind); 0: the closed model of --concurrency", load.MaxRate))
	fs.DurationVar(&cfg.Duration, "duration", 0, "stop placing orders after this long (--orders is then the most; by default rate x duration in the open model, unbounded in the closed one)")
	fs.Float64Var(&cfg.CancelRatio, "cancel-ratio", 0, "share of accepted orders to cancel as soon as they are accepted, 0 to 1")
	fs.BoolVar(&cfg.PreferWait, "prefer-wait", false, "each POST asks, with Prefer: wait=30, to be answered once its order is final: one round trip per order instead of a POST and a GET ?wait=; closed-model workers then wait for outcomes (orders to cancel are placed without it)")
	fs.Float64Var(&cfg.UnknownSKURatio, "unknown-sku-ratio", 0, "share of orders naming a SKU that does not exist (rejected as unknown_sku), 0 to 1")
	outDir := fs.String("out", "", "also write report.json (raw figures), latency.svg, histogram.svg and report.html into this `directory`")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	loadDefaults(&cfg, fs, getenv)
	if stock.set {
		cfg.Stock = stock.v
	}
	if cfg.APIKey == "" {
		var err error
		if cfg.APIKey, err = keptAPIKey(*dataDir); err != nil {
			return fmt.Errorf("load: %w", err)
		}
		if cfg.APIKey == "" {
			return usageError{fmt.Sprintf("load: --api-key is required (or CONVERGE_API_KEY, or an api-key file in --data, here %s)", filepath.Join(*dataDir, "api-key"))}
		}
	}
	if err := cfg.Validate(); err != nil {
		return usageError{"load: " + strings.TrimPrefix(err.Error(), load.ErrConfig.Error()+": ")}
	}

	fmt.Fprintf(stderr, "load: %s to %s on LOAD-1..LOAD-%d (%d units available each); stops after %s\n",
		cfg.Plan(), cfg.URL, cfg.SKUs, cfg.Stock, cfg.Timeout)
	live := isTerminal(stdout)
	if live {
		cfg.OnProgress = func(p load.Progress) {
			// \r and erase-line redraw the one line in place.
			fmt.Fprintf(stdout, "\r\x1b[K%s", p)
		}
	}
	client := load.NewClient(cfg.Connections())
	defer client.CloseIdleConnections()
	rep, err := load.Run(ctx, cfg, client)
	if live {
		fmt.Fprint(stdout, "\r\x1b[K")
	}
	var runErr *load.RunError
	if err == nil || errors.As(err, &runErr) {
		if perr := rep.Print(stdout); perr != nil && err == nil {
			return fmt.Errorf("load: %w", perr)
		}
		if *outDir != "" {
			if werr := rep.WriteFiles(*outDir); werr != nil {
				return errors.Join(err, werr)
			}
			fmt.Fprintf(stdout, "%-13s %s\n", "files", filepath.Join(*outDir, load.FileHTML)+" (and "+load.FileJSON+", "+load.FileLatency+", "+load.FileHistogram+")")
		}
	}
	return err
}

// loadDefaults settles what --duration leaves open, unless given: the most
// orders (rate x duration in the open model, unbounded in the closed one)
// and the timeout (a minute more than the duration). It then sets the
// default stock.
func loadDefaults(cfg *load.Config, fs *flag.FlagSet, getenv func(string) string) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if cfg.Duration > 0 {
		if !given["orders"] && getenv("CONVERGE_ORDERS") == "" {
			cfg.Orders = load.MaxOrders
			if cfg.Rate > 0 {
				cfg.Orders = max(1, min(load.MaxOrders, int(cfg.Rate*cfg.Duration.Seconds())))
			}
		}
		if !given["timeout"] && getenv("CONVERGE_TIMEOUT") == "" {
			cfg.Timeout = cfg.Duration + time.Minute
		}
	}
	cfg.Stock = load.DefaultStock(cfg.Orders, cfg.Items, cfg.SKUs)
}

// isTerminal reports whether w is a terminal (a character device), where
// a progress line can be redrawn in place.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// optionalInt is an int64 flag that knows whether it was set; it shows no
// default in the usage text.
type optionalInt struct {
	v   int64
	set bool
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.FormatInt(o.v, 10)
}

func (o *optionalInt) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return errors.New("not a whole number")
	}
	if v < 0 {
		return errors.New("must not be negative")
	}
	o.v, o.set = v, true
	return nil
}
