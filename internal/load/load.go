// Package load is a bounded load generator for a running converge system
// that measures the whole flow, not just the front door.
//
// Run gives each of its SKUs (LOAD-1..LOAD-n) a fresh amount of available
// stock, places a fixed number of orders with a fixed number of workers and
// follows every accepted order with long-polling GETs until it leaves
// PENDING. The Report says how fast orders were accepted (202) and how fast
// they reached their final state. Only the configured base URL is ever
// requested.
package load

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Limits of a Config.
const (
	MaxOrders      = 1_000_000
	MaxConcurrency = 1024
	MaxSKUs        = 10_000
	MaxItems       = 100 // the API's limit of items per order
	MaxStock       = 1_000_000_000
	maxQuantity    = 3 // each item orders 1..maxQuantity units
)

// ErrConfig is wrapped by the errors of Config.Validate.
var ErrConfig = errors.New("invalid load config")

// Config is one load run.
type Config struct {
	URL         string        // base URL of the system, such as http://127.0.0.1:8080
	APIKey      string        // sent as Authorization: Bearer <key>
	Orders      int           // orders to place
	Concurrency int           // workers placing orders; as many again wait for outcomes
	SKUs        int           // SKUs LOAD-1..LOAD-<SKUs> the orders draw from
	Stock       int64         // units available per SKU at the start; negative: DefaultStock
	Items       int           // an order has 1..Items distinct SKUs
	Timeout     time.Duration // the whole run, stock setup included
	Seed        uint64        // seeds the random orders; 0 picks one
}

// DefaultConfig returns the defaults of converge load; APIKey is left empty.
func DefaultConfig() Config {
	return Config{
		URL:         "http://127.0.0.1:8080",
		Orders:      2000,
		Concurrency: 32,
		SKUs:        10,
		Stock:       -1,
		Items:       1,
		Timeout:     5 * time.Minute,
	}
}

// DefaultStock is the stock per SKU that lets about 80% of the orders be
// confirmed: an order has on average (items+1)/2 SKUs of 2 units each, spread
// evenly over the SKUs.
func DefaultStock(orders, items, skus int) int64 {
	if skus < 1 {
		return 0
	}
	avgUnits := float64(items+1) / 2 * (1 + maxQuantity) / 2
	return int64(math.Round(float64(orders) * avgUnits * 0.8 / float64(skus)))
}

// Validate reports the first problem of c, wrapping ErrConfig.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if _, err := baseURL(c.URL); err != nil {
		return bad("%v", err)
	}
	switch {
	case c.APIKey == "":
		return bad("an API key is required")
	case strings.ContainsAny(c.APIKey, "\r\n"):
		return bad("the API key must be a single line")
	case c.Orders < 1 || c.Orders > MaxOrders:
		return bad("orders must be 1 to %d, got %d", MaxOrders, c.Orders)
	case c.Concurrency < 1 || c.Concurrency > MaxConcurrency:
		return bad("concurrency must be 1 to %d, got %d", MaxConcurrency, c.Concurrency)
	case c.SKUs < 1 || c.SKUs > MaxSKUs:
		return bad("skus must be 1 to %d, got %d", MaxSKUs, c.SKUs)
	case c.Items < 1 || c.Items > min(MaxItems, c.SKUs):
		return bad("items must be 1 to %d (at most skus, and an order has at most %d items), got %d", min(MaxItems, c.SKUs), MaxItems, c.Items)
	case c.Stock > MaxStock:
		return bad("stock must be at most %d, got %d", MaxStock, c.Stock)
	case c.Timeout <= 0:
		return bad("timeout must be positive, got %s", c.Timeout)
	}
	return nil
}

// baseURL checks the base URL and returns it without a trailing slash.
func baseURL(s string) (string, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", fmt.Errorf("url %q: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("url %q must start with http:// or https://", s)
	case u.Host == "":
		return "", fmt.Errorf("url %q has no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("url %q must be a plain base URL, without user, query or fragment", s)
	}
	return strings.TrimRight(s, "/"), nil
}

// sku names the i-th load SKU, counting from 0.
func sku(i int) string { return fmt.Sprintf("LOAD-%d", i+1) }

// RunError is the error of a run that measured something but did not pass:
// a request failed, an order was still PENDING at the end, or the run was
// stopped. It unwraps to context.Canceled or context.DeadlineExceeded when
// the run was stopped.
type RunError struct {
	msg   string
	cause error
}

func (e *RunError) Error() string { return e.msg }
func (e *RunError) Unwrap() error { return e.cause }

// errTimeout is the cause of a run that reached Config.Timeout.
var errTimeout = errors.New("load: timeout")

// Run sets the stock of the load SKUs, places cfg.Orders orders, waits for
// each accepted one to leave PENDING and reports what it measured. client
// should allow 2*cfg.Concurrency idle connections to the host (see
// NewClient); nil uses NewClient.
//
// The Report holds everything measured even when the error is not nil. The
// error is a *RunError if any request failed, any order is still PENDING or
// ctx ended or the timeout passed first; other errors (a bad Config, failing
// to set the stock) mean nothing was measured.
func Run(ctx context.Context, cfg Config, client *http.Client) (Report, error) {
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	if cfg.Stock < 0 {
		cfg.Stock = DefaultStock(cfg.Orders, cfg.Items, cfg.SKUs)
	}
	if client == nil {
		client = NewClient(cfg.Concurrency)
	}
	base, _ := baseURL(cfg.URL) // checked by Validate
	cfg.URL = base
	r := &runner{cfg: cfg, client: client, base: base}

	runCtx, cancel := context.WithTimeoutCause(ctx, cfg.Timeout, errTimeout)
	defer cancel()
	start := time.Now()
	if err := r.setStock(runCtx); err != nil {
		if runCtx.Err() != nil {
			return Report{}, &RunError{msg: "load: " + stopReason(runCtx, cfg) + " while setting stock", cause: runCtx.Err()}
		}
		return Report{}, err
	}
	recs, waitErrs := r.placeAndWait(runCtx)
	rep := r.report(recs, waitErrs, time.Since(start))
	if runCtx.Err() != nil {
		rep.Stopped = stopReason(runCtx, cfg)
	}
	return rep, rep.verdict(runCtx.Err())
}

func stopReason(ctx context.Context, cfg Config) string {
	if errors.Is(context.Cause(ctx), errTimeout) {
		return fmt.Sprintf("stopped at the timeout of %s", cfg.Timeout)
	}
	return "interrupted"
}
