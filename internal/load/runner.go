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
	"sync/atomic"
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

// An open-model start later than lateAfter is counted as late; one later
// than behindAfter means the client is not keeping the schedule (a few
// late by less are the scheduling of a busy machine).
const (
	lateAfter   = 10 * time.Millisecond
	behindAfter = 100 * time.Millisecond
)

type runner struct {
	cfg    Config
	client *http.Client
	base   string

	// What the progress line shows, counted as it happens.
	sent, accepted, final, failed atomic.Int64
	behind                        atomic.Int64 // open model: how late the last start was, in ns

	waitErrs, cancelErrs tally
}

// record is what is known of one order. The feeder makes it; one sender,
// then at most one follower, write it in turn (a channel orders them); the
// report reads it after both are done.
type record struct {
	n       int
	items   []item
	unknown bool      // names a SKU that does not exist
	cancel  bool      // to be cancelled once accepted
	due     time.Time // open model: when the schedule wanted it started

	done     bool // the POST got an answer or failed; false: not sent or cut off by the stop
	sent     time.Time
	accepted time.Time // the POST's answer arrived (202, or 201 with Prefer: wait)
	seen     time.Time // the answer with a final status arrived
	failure  string    // error kind of a failed POST: an HTTP status or noResponse
	detail   string
	id       string
	status   string // last status seen
	reason   string // of a rejection
	// created and updated are the order service's own timestamps, as its
	// last answer gave them.
	created, updated time.Time
	cancelStatus     int // the cancel's HTTP status; 0: none was answered
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

// placeAndWait places the orders, in the closed or the open model, and,
// alongside, follows each accepted one until it is final. It returns the
// records of the orders it handed out and how many it meant to place: all
// of Orders, unless Duration ended the placing first.
func (r *runner) placeAndWait(ctx context.Context) ([]*record, int) {
	seed := r.cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	perm := make([]int, r.cfg.SKUs)
	for i := range perm {
		perm[i] = i
	}
	// Senders never wait for followers; a follower that falls behind only
	// sees an order final later, which the server's timestamps do not
	// count.
	accepted := make(chan *record, min(r.cfg.Orders, 1<<20))
	var followers sync.WaitGroup
	for range r.cfg.Concurrency {
		followers.Go(func() {
			for rec := range accepted {
				r.follow(ctx, rec)
			}
		})
	}
	progressDone := make(chan struct{})
	var progress sync.WaitGroup
	begin := time.Now()
	if r.cfg.OnProgress != nil {
		progress.Go(func() { r.report5PerSecond(begin, progressDone) })
	}

	var (
		recs    []*record
		planned = r.cfg.Orders
		senders sync.WaitGroup
	)
	if r.cfg.Rate > 0 {
		interval := time.Duration(float64(time.Second) / r.cfg.Rate)
		slots := make(chan struct{}, MaxInFlight)
	schedule:
		for n := range r.cfg.Orders {
			due := begin.Add(time.Duration(n) * interval)
			if r.cfg.Duration > 0 && due.Sub(begin) >= r.cfg.Duration {
				planned = n
				break
			}
			sleep(ctx, time.Until(due))
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				break schedule
			}
			r.behind.Store(int64(max(time.Since(due), 0)))
			rec := r.newRecord(rng, perm, n, due)
			recs = append(recs, rec)
			senders.Go(func() {
				defer func() { <-slots }()
				r.order(ctx, rec, accepted)
			})
		}
	} else {
		jobs := make(chan *record)
		for range r.cfg.Concurrency {
			senders.Go(func() {
				for rec := range jobs {
					if ctx.Err() == nil {
						r.order(ctx, rec, accepted)
					}
				}
			})
		}
	feed:
		for n := range r.cfg.Orders {
			if r.cfg.Duration > 0 && time.Since(begin) >= r.cfg.Duration {
				planned = n
				break
			}
			rec := r.newRecord(rng, perm, n, time.Time{})
			select {
			case jobs <- rec:
				recs = append(recs, rec)
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
	}
	if ctx.Err() != nil && r.cfg.Duration > 0 {
		planned = len(recs) // how many the duration would have allowed is unknown
	}
	senders.Wait()
	close(accepted)
	followers.Wait()
	close(progressDone)
	progress.Wait()
	return recs, planned
}

// report5PerSecond calls OnProgress every 200 ms until done is closed, and
// once more then.
func (r *runner) report5PerSecond(begin time.Time, done <-chan struct{}) {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var window [6]int64 // accepted counts of the last second, oldest first
	for {
		stop := false
		select {
		case <-tick.C:
		case <-done:
			stop = true
		}
		acc := r.accepted.Load()
		copy(window[:], window[1:])
		window[len(window)-1] = acc
		r.cfg.OnProgress(Progress{
			Sent:     int(r.sent.Load()),
			Accepted: int(acc),
			Final:    int(r.final.Load()),
			Errors:   int(r.failed.Load()),
			Rate:     float64(acc - window[0]), // over the last second
			Elapsed:  time.Since(begin),
			Behind:   time.Duration(r.behind.Load()),
		})
		if stop {
			return
		}
	}
}

// order is the life of one order on the client: place it, cancel it if
// chosen, and hand it to the followers while it is PENDING.
func (r *runner) order(ctx context.Context, rec *record, accepted chan<- *record) {
	r.place(ctx, rec)
	if rec.done {
		r.sent.Add(1)
	}
	if rec.failure != "" {
		r.failed.Add(1)
	}
	if rec.id == "" {
		return
	}
	r.accepted.Add(1)
	if rec.cancel {
		r.cancelOrder(ctx, rec)
	}
	if rec.status == pending {
		accepted <- rec
	} else {
		r.final.Add(1)
	}
}

// newRecord draws order n: 1..Items distinct load SKUs, 1..3 units each;
// one of them replaced by a SKU that does not exist if the order is one
// of the UnknownSKURatio; cancelled once accepted if one of the
// CancelRatio.
func (r *runner) newRecord(rng *rand.Rand, perm []int, n int, due time.Time) *record {
	k := 1 + rng.IntN(r.cfg.Items)
	items := make([]item, k)
	for i := range k { // a partial Fisher-Yates shuffle picks k distinct SKUs
		j := i + rng.IntN(len(perm)-i)
		perm[i], perm[j] = perm[j], perm[i]
		items[i] = item{SKU: sku(perm[i]), Quantity: 1 + rng.IntN(maxQuantity)}
	}
	rec := &record{n: n, items: items, due: due}
	if rng.Float64() < r.cfg.UnknownSKURatio {
		rec.unknown = true
		items[rng.IntN(k)].SKU = unknownSKU(n)
	}
	rec.cancel = rng.Float64() < r.cfg.CancelRatio
	return rec
}

// order is the part of the API's order this package reads.
type order struct {
	ID        string    `json:"id"`
	Status    string    `json:"status"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

type item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// take records what an answer said of the order, at now.
func (rec *record) take(o order, now time.Time) {
	rec.status, rec.reason, rec.created, rec.updated = o.Status, o.Reason, o.CreatedAt, o.UpdatedAt
	if o.Status != pending && rec.seen.IsZero() {
		rec.seen = now
	}
}

// place POSTs the order.
func (r *runner) place(ctx context.Context, rec *record) {
	body, _ := json.Marshal(struct {
		CustomerID string `json:"customer_id"`
		Items      []item `json:"items"`
	}{"load-" + strconv.Itoa(rec.n+1), rec.items})

	var prefer string
	if r.cfg.PreferWait && !rec.cancel {
		prefer = "wait=" + strconv.Itoa(int(waitFor/time.Second))
	}
	rec.sent = time.Now()
	code, resp, err := r.doPrefer(ctx, http.MethodPost, "/api/v1/orders", body, prefer)
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return // cut off by the stop: not counted as sent
		}
		rec.done, rec.failure, rec.detail = true, noResponse, err.Error()
		return
	}
	rec.done = true
	// With Prefer: wait, 201 brings the final order, 202 a PENDING one
	// (the wait ran out), which the followers then take on.
	if code != http.StatusAccepted && (prefer == "" || code != http.StatusCreated) {
		rec.failure, rec.detail = strconv.Itoa(code), describe(code, resp)
		return
	}
	var o order
	if err := json.Unmarshal(resp, &o); err != nil || o.ID == "" || o.Status == "" {
		rec.failure, rec.detail = strconv.Itoa(code)+" without an order", truncate(string(resp))
		return
	}
	rec.accepted, rec.id = now, o.ID
	rec.take(o, now)
}

// cancelOrder cancels an accepted order. A 409 means inventory's rejection
// came first; the followers then read the order as it is.
func (r *runner) cancelOrder(ctx context.Context, rec *record) {
	code, body, err := r.do(ctx, http.MethodPost, "/api/v1/orders/"+url.PathEscape(rec.id)+"/cancel", nil)
	now := time.Now()
	var o order
	switch {
	case err != nil:
		if ctx.Err() == nil {
			r.cancelErrs.add(noResponse, err.Error())
			r.failed.Add(1)
		}
	case code == http.StatusConflict:
		rec.cancelStatus = code
	case code != http.StatusOK && code != http.StatusAccepted:
		r.cancelErrs.add(strconv.Itoa(code), describe(code, body))
		r.failed.Add(1)
	case json.Unmarshal(body, &o) != nil || o.Status == "":
		r.cancelErrs.add(strconv.Itoa(code)+" without an order", truncate(string(body)))
		r.failed.Add(1)
	default:
		rec.cancelStatus = code
		rec.take(o, now)
	}
}

// follow long-polls an accepted order until it leaves PENDING, the run
// stops, or its GETs fail too often.
func (r *runner) follow(ctx context.Context, rec *record) {
	defer func() {
		if rec.status != pending {
			r.final.Add(1)
		}
	}()
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
			r.waitErrs.add(noResponse, err.Error())
		case code != http.StatusOK:
			r.waitErrs.add(strconv.Itoa(code), describe(code, body))
			if code < 500 && code != http.StatusTooManyRequests {
				r.failed.Add(1)
				return // will not get better by asking again
			}
		case json.Unmarshal(body, &o) != nil || o.Status == "":
			r.waitErrs.add("200 without an order", truncate(string(body)))
			r.failed.Add(1)
			return
		default:
			fails = 0
			rec.take(o, now)
			if o.Status == pending && now.Sub(asked) < waitFor/2 {
				// The server did not hold the request: do not spin.
				sleep(ctx, 100*time.Millisecond)
			}
			continue
		}
		r.failed.Add(1)
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
	return r.doPrefer(ctx, method, path, body, "")
}

// doPrefer is do with a Prefer header, unless prefer is empty.
func (r *runner) doPrefer(ctx context.Context, method, path string, body []byte, prefer string) (int, []byte, error) {
	guard := requestGuard
	if (method == http.MethodGet && strings.Contains(path, "?wait=")) || prefer != "" {
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
	if prefer != "" {
		req.Header.Set("Prefer", prefer)
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
