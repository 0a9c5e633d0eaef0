// Package load is a load generator for a running converge system that
// measures the whole flow, not just the front door.
//
// Run gives each of its SKUs (LOAD-1..LOAD-n) a fresh amount of available
// stock, then places orders, either with a fixed number of workers (the
// closed model: a worker sends its next order when the last one is
// answered) or on a schedule of so many orders a second whatever the
// answers (the open model, Config.Rate), until Config.Orders are placed or
// Config.Duration has passed. A share of the orders names a SKU that does
// not exist (rejected as unknown_sku) and a share is cancelled at once, so
// the mix exercises every path. Every accepted order is followed with
// long-polling GETs until it leaves PENDING. The Report says how fast orders
// were accepted (202) and how long each took from its creation to its final
// state by the order service's own timestamps; WriteFiles saves the raw
// figures, pictures of them and an HTML page. Only the configured base URL
// is ever requested.
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
	MaxRate        = 100_000 // orders a second
	maxQuantity    = 3       // each item orders 1..maxQuantity units
)

// ErrConfig is wrapped by the errors of Config.Validate.
var ErrConfig = errors.New("invalid load config")

// Config is one load run.
type Config struct {
	URL    string // base URL of the system, such as http://127.0.0.1:8080
	APIKey string // sent as Authorization: Bearer <key>
	// Orders is how many orders to place; with Duration, the most.
	Orders int
	// Concurrency is how many workers place orders in the closed model,
	// and in both models how many follow accepted orders to their end.
	Concurrency int
	// Rate, if positive, is the open model: orders are started at this
	// many a second on a fixed schedule, whether or not earlier ones have
	// been answered (at most MaxInFlight at once; past that the client
	// falls behind the schedule, and the Report says by how much).
	Rate float64
	// Duration, if positive, stops placing orders after this long.
	Duration time.Duration
	// CancelRatio is the share of accepted orders cancelled as soon as
	// their 202 arrives (racing the reservation), from 0 to 1.
	CancelRatio float64
	// PreferWait makes each POST ask, with Prefer: wait, to be answered
	// once its order is final: one round trip per order instead of a POST
	// and a GET ?wait=, and in the closed model a worker then waits for
	// its order's outcome, not only its acceptance. Orders drawn to be
	// cancelled are placed without it, to be cancelled while PENDING.
	PreferWait bool
	// UnknownSKURatio is the share of orders with an item of a SKU that
	// does not exist, which inventory rejects as unknown_sku, from 0 to 1.
	UnknownSKURatio float64
	SKUs            int           // SKUs LOAD-1..LOAD-<SKUs> the orders draw from
	Stock           int64         // units available per SKU at the start; negative: DefaultStock
	Items           int           // an order has 1..Items distinct SKUs
	Timeout         time.Duration // the whole run, stock setup included
	Seed            uint64        // seeds the random orders; 0 picks one
	// OnProgress, if set, is called with the running counts about five
	// times a second while orders are placed and followed, from one
	// goroutine.
	OnProgress func(Progress) `json:"-"`
}

// MaxInFlight bounds the orders the open model has started and not yet
// seen answered.
const MaxInFlight = 4096

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

// Connections is how many connections to the system a run of c keeps
// open: one per worker and per follower, and in the open model enough for
// a second's worth of orders in flight.
func (c Config) Connections() int {
	n := 2 * c.Concurrency
	if c.Rate > 0 {
		n = c.Concurrency + min(MaxInFlight, int(math.Ceil(c.Rate)))
	}
	return n
}

// Plan says what a run of c will place: the model and how many orders.
func (c Config) Plan() string {
	var s string
	if c.Rate > 0 {
		s = fmt.Sprintf("%g orders/s (open model)", c.Rate)
	} else {
		s = fmt.Sprintf("%d workers (closed model)", c.Concurrency)
	}
	if c.Duration > 0 {
		s += fmt.Sprintf(" for %s (at most %d orders)", c.Duration, c.Orders)
	} else {
		s += fmt.Sprintf(", %d orders", c.Orders)
	}
	if c.PreferWait {
		s += ", each POST waiting for its outcome (Prefer: wait)"
		if c.CancelRatio > 0 {
			s += " but those of the orders to cancel"
		}
	}
	return s
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
	case c.Rate < 0 || c.Rate > MaxRate || math.IsNaN(c.Rate):
		return bad("rate must be 0 (closed model) to %d orders a second, got %g", MaxRate, c.Rate)
	case c.Duration < 0:
		return bad("duration must not be negative, got %s", c.Duration)
	case c.Duration > 0 && c.Duration >= c.Timeout:
		return bad("timeout (%s) must be longer than duration (%s), to let the last orders converge", c.Timeout, c.Duration)
	case !(c.CancelRatio >= 0 && c.CancelRatio <= 1):
		return bad("cancel ratio must be 0 to 1, got %g", c.CancelRatio)
	case !(c.UnknownSKURatio >= 0 && c.UnknownSKURatio <= 1):
		return bad("unknown SKU ratio must be 0 to 1, got %g", c.UnknownSKURatio)
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

// unknownSKU names a SKU no run ever stocks: inventory rejects an order
// naming it as unknown_sku.
func unknownSKU(n int) string { return fmt.Sprintf("LOAD-UNKNOWN-%d", n+1) }

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

// Run sets the stock of the load SKUs, places orders as cfg says, waits
// for each accepted one to leave PENDING and reports what it measured.
// client should keep cfg.Connections() idle connections to the host (see
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
		client = NewClient(cfg.Connections())
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
	recs, planned := r.placeAndWait(runCtx)
	rep := r.report(recs, planned, time.Since(start))
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
