package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/convergehq/converge/internal/load"
)

func runLoad(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := load.DefaultConfig()
	fs := newFlagSet("load")
	fs.StringVar(&cfg.URL, "url", cfg.URL, "base URL of the system (the load balancer); no other URL is ever requested")
	fs.StringVar(&cfg.APIKey, "api-key", "", "API key (default: the one converge dev keeps in --data)")
	dataDir := fs.String("data", "./converge-data", "data directory of converge dev, read only for its api-key file when --api-key is not given")
	fs.IntVar(&cfg.Orders, "orders", cfg.Orders, fmt.Sprintf("orders to place, 1 to %d", load.MaxOrders))
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, fmt.Sprintf("workers placing orders, 1 to %d; as many again wait for the outcomes", load.MaxConcurrency))
	fs.IntVar(&cfg.SKUs, "skus", cfg.SKUs, "SKUs LOAD-1..LOAD-n the orders draw from")
	stock := &optionalInt{}
	fs.Var(stock, "stock", "`units` available per SKU at the start of the run (default: enough to confirm about 80% of the orders)")
	fs.IntVar(&cfg.Items, "items", cfg.Items, "most distinct SKUs in one order (each order takes 1 to this many, 1 to 3 units each)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "stop the whole run after this long, reporting what is still PENDING")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	cfg.Stock = load.DefaultStock(cfg.Orders, cfg.Items, cfg.SKUs)
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

	fmt.Fprintf(stderr, "load: %d orders to %s with %d workers on LOAD-1..LOAD-%d (%d units available each); stops after %s\n",
		cfg.Orders, cfg.URL, cfg.Concurrency, cfg.SKUs, cfg.Stock, cfg.Timeout)
	client := load.NewClient(cfg.Concurrency)
	defer client.CloseIdleConnections()
	rep, err := load.Run(ctx, cfg, client)
	var runErr *load.RunError
	if err == nil || errors.As(err, &runErr) {
		if perr := rep.Print(stdout); perr != nil && err == nil {
			return fmt.Errorf("load: %w", perr)
		}
	}
	return err
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
