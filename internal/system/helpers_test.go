package system_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/check"
)

const (
	testKey      = "test-key"
	testAdminKey = "test-admin-key"
)

// client talks to the system through the load balancer, as a user would.
type client struct {
	t    testing.TB
	base string
	http *http.Client
}

func newClient(t testing.TB, d deployment) *client {
	return &client{t: t, base: d.URL(), http: &http.Client{Timeout: 40 * time.Second}}
}

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// do sends a request with the API key and a JSON body (a string is sent as
// it is); headers are name, value pairs.
func (c *client) do(method, path string, body any, headers ...string) response {
	c.t.Helper()
	resp, err := c.try(method, path, body, headers...)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func (c *client) try(method, path string, body any, headers ...string) (response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: raw}, err
}

type item struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

type orderView struct {
	ID         string `json:"id"`
	CustomerID string `json:"customer_id"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	Items      []item `json:"items"`
}

type stockView struct {
	SKU       string `json:"sku"`
	OnHand    int64  `json:"on_hand"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
}

func (c *client) setStock(sku string, onHand int64) {
	c.t.Helper()
	if r := c.do("PUT", "/api/v1/inventory/"+sku, map[string]int64{"on_hand": onHand}); r.Status != http.StatusOK {
		c.t.Fatalf("PUT stock %s: status %d, want 200: %s", sku, r.Status, r.Body)
	}
}

func (c *client) stock(sku string) stockView {
	c.t.Helper()
	r := c.do("GET", "/api/v1/inventory/"+sku, nil)
	if r.Status != http.StatusOK {
		c.t.Fatalf("GET stock %s: status %d: %s", sku, r.Status, r.Body)
	}
	var s stockView
	r.decode(c.t, &s)
	return s
}

func (c *client) place(customer string, items ...item) orderView {
	c.t.Helper()
	r := c.do("POST", "/api/v1/orders", map[string]any{"customer_id": customer, "items": items})
	if r.Status != http.StatusAccepted {
		c.t.Fatalf("POST order: status %d, want 202: %s", r.Status, r.Body)
	}
	var o orderView
	r.decode(c.t, &o)
	if o.Status != "PENDING" {
		c.t.Fatalf("new order status %q, want PENDING", o.Status)
	}
	return o
}

// waitBudget is how long one test may spend waiting for the system to
// converge, all its waits together: every final, eventually and
// checkInvariants of a test draws on one deadline, set by the first of them.
// Healthy runs need a few seconds; a stuck flow then fails in seconds
// instead of waiting 30s per order, one after another, into go test's
// 10-minute panic.
const waitBudget = 20 * time.Second

// deadlines holds the shared wait deadline of each running test.
var deadlines = struct {
	sync.Mutex
	m map[testing.TB]time.Time
}{m: map[testing.TB]time.Time{}}

// deadline returns t's shared wait deadline, starting it on first use, so
// that the time a test spends setting up and placing orders is not counted.
func deadline(t testing.TB) time.Time {
	deadlines.Lock()
	defer deadlines.Unlock()
	d, ok := deadlines.m[t]
	if !ok {
		d = time.Now().Add(waitBudget)
		deadlines.m[t] = d
		t.Cleanup(func() {
			deadlines.Lock()
			defer deadlines.Unlock()
			delete(deadlines.m, t)
		})
	}
	return d
}

// waitEnd returns when a wait of up to d that starts now must give up: after
// d, or at the test's shared deadline if that comes first.
func waitEnd(t testing.TB, d time.Duration) time.Time {
	end := time.Now().Add(d)
	if shared := deadline(t); shared.Before(end) {
		return shared
	}
	return end
}

// final waits (server side, ?wait=) until the order has left PENDING.
func (c *client) final(id string) orderView {
	c.t.Helper()
	return c.finals(id)[0]
}

// finals waits until every order of ids has left PENDING and returns them
// in the order of ids. If some are still PENDING at the test's deadline it
// fails the test once, naming all of them.
func (c *client) finals(ids ...string) []orderView {
	c.t.Helper()
	until := deadline(c.t)
	out := make([]orderView, len(ids))
	var stuck []string
	for i, id := range ids {
		for {
			path := "/api/v1/orders/" + id
			// Past the deadline, one plain read per order is enough to
			// tell which are stuck.
			if wait := min(time.Until(until), 10*time.Second).Round(time.Millisecond); wait > 0 {
				path += "?wait=" + wait.String()
			}
			r := c.do("GET", path, nil)
			if r.Status != http.StatusOK {
				c.t.Fatalf("GET order %s: status %d: %s", id, r.Status, r.Body)
			}
			var o orderView
			r.decode(c.t, &o)
			out[i] = o
			if o.Status != "PENDING" {
				break
			}
			if !time.Now().Before(until) {
				stuck = append(stuck, id)
				break
			}
		}
	}
	if len(stuck) > 0 {
		c.t.Fatalf("%d of %d orders still PENDING when the test's %s of waiting ran out: %s",
			len(stuck), len(ids), waitBudget, strings.Join(stuck, " "))
	}
	return out
}

// eventually polls cond every 50ms for up to d, and no longer than the
// test's shared deadline.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	began := time.Now()
	if !settle(t, d, cond) {
		t.Fatalf("timed out after %s waiting for %s (own limit %s, the test's %s of waiting in all)",
			time.Since(began).Round(time.Millisecond), what, d, waitBudget)
	}
}

// settle polls cond as eventually does, but only reports whether it came
// to hold: the caller's own checks then say what did not.
func settle(t testing.TB, d time.Duration, cond func() bool) bool {
	until := waitEnd(t, d)
	for !cond() {
		if time.Now().After(until) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// checkInvariants runs the invariant checker over the system's databases,
// waiting up to 30s, and no longer than the test's shared deadline, for the
// system to settle, and fails on any FAIL.
func checkInvariants(t testing.TB, d deployment) {
	t.Helper()
	ctx := context.Background()
	orders, inv, err := d.Databases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	defer inv.Close()
	results, err := check.Settle(ctx, orders, inv, time.Until(waitEnd(t, 30*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range check.Failed(results) {
		t.Errorf("invariant failed: %s: %s", r.Name, r.Detail)
	}
}

func runCheck(t testing.TB, ctx context.Context, d deployment) []check.Result {
	t.Helper()
	orders, inv, err := d.Databases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer orders.Close()
	defer inv.Close()
	results, err := check.Run(ctx, orders, inv)
	if err != nil {
		t.Fatal(err)
	}
	return results
}
