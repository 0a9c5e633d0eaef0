package load

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// NewClient returns an HTTP client for a run with the given concurrency: it
// keeps enough idle connections for every sender and waiter, uses no proxy
// and follows no redirect, so only the configured URL is ever requested (a
// redirect counts as a failed request).
func NewClient(concurrency int) *http.Client {
	conns := 2*max(concurrency, 1) + 8
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          conns,
			MaxIdleConnsPerHost:   conns,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

const (
	// waitFor is how long a waiter asks the server to hold a GET: the API's
	// upper bound.
	waitFor = 30 * time.Second
	// requestGuard bounds a request beyond what the server should take.
	requestGuard = 15 * time.Second
	// waitRetries is how many failed GETs in a row make a waiter give up on
	// an order.
	waitRetries = 5
	// noResponse is the error kind of a request that got no HTTP answer.
	noResponse = "no response"
)

const pending = "PENDING"

type runner struct {
	cfg    Config
	client *http.Client
	base   string
}

// record is what is known of one order. The sender writes it, then hands
// it to a waiter over a channel; the report reads it after both are done.
type record struct {
	done     bool // the POST got an answer or failed; false: not sent or cut off by the stop
	sent     time.Time
	accepted time.Time // the 202 arrived
	final    time.Time // the answer with a final status arrived
	failure  string    // error kind of a failed POST: an HTTP status or noResponse
	detail   string
	id       string
	status   string // last status seen
}

// tally counts failed requests by kind and keeps the first detail of each.
type tally struct {
	mu     sync.Mutex
	counts map[string]int
	first  map[string]string
}

func (t *tally) add(kind, detail string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.counts == nil {
		t.counts, t.first = map[string]int{}, map[string]string{}
	}
	t.counts[kind]++
	if _, ok := t.first[kind]; !ok {
		t.first[kind] = detail
	}
}

// setStock makes Stock units available on every load SKU: on_hand becomes
// what is reserved (by earlier runs' confirmed orders) plus Stock.
func (r *runner) setStock(ctx context.Context) error {
	jobs := make(chan int)
	errs := make(chan error, r.cfg.SKUs)
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, r.cfg.SKUs) {
		wg.Go(func() {
			for i := range jobs {
				if err := r.setOne(ctx, sku(i)); err != nil {
					errs <- err
				}
			}
		})
	}
feed:
	for i := range r.cfg.SKUs {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	return ctx.Err()
}

func (r *runner) setOne(ctx context.Context, s string) error {
	path := "/api/v1/inventory/" + url.PathEscape(s)
	var lastErr error
	for range 3 { // reserved may move between the GET and the PUT: a 409
		var item struct {
			Reserved int64 `json:"reserved"`
		}
		code, body, err := r.do(ctx, http.MethodGet, path, nil)
		switch {
		case err != nil:
			return fmt.Errorf("load: set stock of %s: GET %s: %w", s, path, err)
		case code == http.StatusOK:
			if err := json.Unmarshal(body, &item); err != nil {
				return fmt.Errorf("load: set stock of %s: GET %s: %v", s, path, err)
			}
		case code != http.StatusNotFound:
			return fmt.Errorf("load: set stock of %s: GET %s: %s", s, path, describe(code, body))
		}
		req, _ := json.Marshal(map[string]int64{"on_hand": item.Reserved + r.cfg.Stock})
		code, body, err = r.do(ctx, http.MethodPut, path, req)
		switch {
		case err != nil:
			return fmt.Errorf("load: set stock of %s: PUT %s: %w", s, path, err)
		case code == http.StatusOK:
			return nil
		case code != http.StatusConflict:
			return fmt.Errorf("load: set stock of %s: PUT %s: %s", s, path, describe(code, body))
		}
		lastErr = fmt.Errorf("load: set stock of %s: PUT %s: %s", s, path, describe(code, body))
	}
	return lastErr
}

// placeAndWait runs the senders and, alongside them, the waiters, so that an
// order is followed as soon as it is accepted.
func (r *runner) placeAndWait(ctx context.Context) ([]record, *tally) {
	recs := make([]record, r.cfg.Orders)
	jobs := make(chan int)
	accepted := make(chan int, r.cfg.Orders) // senders never wait for waiters
	waitErrs := &tally{}
	seed := r.cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}

	var senders, waiters sync.WaitGroup
	for w := range r.cfg.Concurrency {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		senders.Go(func() {
			perm := make([]int, r.cfg.SKUs)
			for i := range perm {
				perm[i] = i
			}
			for n := range jobs {
				if ctx.Err() != nil {
					continue // drain
				}
				rec := &recs[n]
				r.place(ctx, rng, perm, n, rec)
				if rec.id != "" {
					accepted <- n
				}
			}
		})
		waiters.Go(func() {
			for n := range accepted {
				r.follow(ctx, &recs[n], waitErrs)
			}
		})
	}
feed:
	for n := range r.cfg.Orders {
		select {
		case jobs <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	senders.Wait()
	close(accepted)
	waiters.Wait()
	return recs, waitErrs
}

// order is the part of the API's order this package reads.
type order struct {
	ID     string `json:"id"`
	Status string `json:"status"`
}

type item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// place POSTs order n: 1..Items distinct load SKUs, 1..3 units each.
func (r *runner) place(ctx context.Context, rng *rand.Rand, perm []int, n int, rec *record) {
	k := 1 + rng.IntN(r.cfg.Items)
	items := make([]item, k)
	for i := range k { // a partial Fisher-Yates shuffle picks k distinct SKUs
		j := i + rng.IntN(len(perm)-i)
		perm[i], perm[j] = perm[j], perm[i]
		items[i] = item{SKU: sku(perm[i]), Quantity: 1 + rng.IntN(maxQuantity)}
	}
	body, _ := json.Marshal(struct {
		CustomerID string `json:"customer_id"`
		Items      []item `json:"items"`
	}{"load-" + strconv.Itoa(n+1), items})

	rec.sent = time.Now()
	code, resp, err := r.do(ctx, http.MethodPost, "/api/v1/orders", body)
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return // cut off by the stop: not counted as sent
		}
		rec.done, rec.failure, rec.detail = true, noResponse, err.Error()
		return
	}
	rec.done = true
	if code != http.StatusAccepted {
		rec.failure, rec.detail = strconv.Itoa(code), describe(code, resp)
		return
	}
	var o order
	if err := json.Unmarshal(resp, &o); err != nil || o.ID == "" || o.Status == "" {
		rec.failure, rec.detail = "202 without an order", truncate(string(resp))
		return
	}
	rec.accepted, rec.id, rec.status = now, o.ID, o.Status
	if o.Status != pending {
		rec.final = now
	}
}

// follow long-polls an accepted order until it leaves PENDING, the run
// stops, or its GETs fail too often.
func (r *runner) follow(ctx context.Context, rec *record, errs *tally) {
	path := "/api/v1/orders/" + url.PathEscape(rec.id) + "?wait=" + waitFor.String()
	fails := 0
	for rec.status == pending && ctx.Err() == nil {
		asked := time.Now()
		code, body, err := r.do(ctx, http.MethodGet, path, nil)
		now := time.Now()
		if err != nil && ctx.Err() != nil {
			return
		}
		var o order
		switch {
		case err != nil:
			errs.add(noResponse, err.Error())
		case code != http.StatusOK:
			errs.add(strconv.Itoa(code), describe(code, body))
			if code < 500 && code != http.StatusTooManyRequests {
				return // will not get better by asking again
			}
		case json.Unmarshal(body, &o) != nil || o.Status == "":
			errs.add("200 without an order", truncate(string(body)))
			return
		default:
			fails = 0
			rec.status = o.Status
			if o.Status != pending {
				rec.final = now
			} else if now.Sub(asked) < waitFor/2 {
				// The server did not hold the request: do not spin.
				sleep(ctx, 100*time.Millisecond)
			}
			continue
		}
		if fails++; fails >= waitRetries {
			return
		}
		sleep(ctx, time.Duration(fails)*200*time.Millisecond)
	}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// do sends one request to the base URL and reads the whole answer.
func (r *runner) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	guard := requestGuard
	if method == http.MethodGet && strings.Contains(path, "?wait=") {
		guard += waitFor
	}
	ctx, cancel := context.WithTimeout(ctx, guard)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return 0, nil, unwrapURLError(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// unwrapURLError drops the method and URL that *url.Error repeats.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// describe renders a failed answer: its status and the problem's detail.
func describe(code int, body []byte) string {
	s := strconv.Itoa(code) + " " + http.StatusText(code)
	var p struct {
		Detail string `json:"detail"`
	}
	if json.Unmarshal(body, &p) == nil && p.Detail != "" {
		return s + ": " + truncate(p.Detail)
	}
	if t := strings.TrimSpace(string(body)); t != "" {
		return s + ": " + truncate(t)
	}
	return s
}

func truncate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 160 {
		return string(r[:157]) + "..."
	}
	return s
}
