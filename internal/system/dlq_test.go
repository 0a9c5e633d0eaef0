package system_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/events"
)

// admin sends a request with the admin key instead of the API key.
func (c *client) admin(method, path string, body any) response {
	c.t.Helper()
	return c.do(method, path, body, "Authorization", "Bearer "+testAdminKey)
}

func (c *client) deadLetters(query string) dlq.Page {
	c.t.Helper()
	r := c.admin("GET", "/api/v1/admin/dead-letters"+query, nil)
	if r.Status != http.StatusOK {
		c.t.Fatalf("list dead letters%s: status %d: %s", query, r.Status, r.Body)
	}
	var p dlq.Page
	r.decode(c.t, &p)
	return p
}

// waitDeadLetters waits until the listing with query holds n dead letters.
func (c *client) waitDeadLetters(query string, n int) []dlq.Letter {
	c.t.Helper()
	var items []dlq.Letter
	eventually(c.t, 15*time.Second, fmt.Sprintf("%d dead letters (%s)", n, query), func() bool {
		items = c.deadLetters(query).Items
		return len(items) == n
	})
	return items
}

// publishRaw publishes messages to the system's broker as another
// publisher would.
func publishRaw(t *testing.T, sys deployment, msgs ...broker.Message) {
	t.Helper()
	ctx := context.Background()
	conn, err := sys.Broker(ctx, "test-publisher")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.PublishBatch(ctx, msgs); err != nil {
		t.Fatal(err)
	}
}

// The admin API lists dead letters with filters and a cursor, shows one in
// full, and discards one or a filtered set.
func TestDeadLetterAPI(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	unknown := `{"specversion":"1.0","id":"x-%d","source":"s","type":"io.converge.order.shipped","subject":"o","schemaversion":"1","data":{}}`
	publishRaw(t, sys,
		broker.Message{ID: "poison-1", Subject: "orders.created", Data: []byte("this is not an event"), Header: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}},
		broker.Message{ID: "poison-2", Subject: "orders.created", Data: fmt.Appendf(nil, unknown, 2)},
		broker.Message{ID: "poison-3", Subject: "inventory.reserved", Data: fmt.Appendf(nil, unknown, 3)},
	)
	all := c.waitDeadLetters("", 3)
	// Two consumers dead-letter concurrently: find each by its message id.
	by := map[string]dlq.Letter{}
	for _, l := range all {
		by[l.MsgID] = l
	}
	malformed, unknownInv, unknownOrder := by["poison-1"], by["poison-2"], by["poison-3"]

	for _, tc := range []struct {
		query string
		want  int
	}{
		{"?consumer=inventory", 2},
		{"?consumer=order", 1},
		{"?type=io.converge.order.shipped", 2},
		{"?reason=MALFORMED", 1},
		{"?consumer=order&reason=malformed", 0},
	} {
		if got := c.deadLetters(tc.query).Items; len(got) != tc.want {
			t.Errorf("list %s: %d dead letters, want %d", tc.query, len(got), tc.want)
		}
	}
	// A page of one, then the next after its cursor.
	first := c.deadLetters("?limit=1")
	if len(first.Items) != 1 || first.Next == "" {
		t.Fatalf("first page of 1: %+v", first)
	}
	second := c.deadLetters("?limit=1&after=" + first.Next)
	if len(second.Items) != 1 || second.Items[0].Seq != all[1].Seq {
		t.Fatalf("second page: %+v, want dead letter %d", second, all[1].Seq)
	}
	for _, bad := range []string{"?limit=0", "?after=x", "?consumer=a.b", "?cosumer=inventory"} {
		r := c.admin("GET", "/api/v1/admin/dead-letters"+bad, nil)
		if r.Status != http.StatusBadRequest {
			t.Errorf("list %s: status %d, want 400: %s", bad, r.Status, r.Body)
		}
		asProblem(t, "list "+bad, r)
	}

	// Show: error, origin, deliveries, headers and payload.
	r := c.admin("GET", fmt.Sprintf("/api/v1/admin/dead-letters/%d", malformed.Seq), nil)
	if r.Status != http.StatusOK {
		t.Fatalf("show: %d %s", r.Status, r.Body)
	}
	var l dlq.Letter
	r.decode(t, &l)
	if l.Consumer != "inventory" || l.OriginalSubject != "orders.created" || l.OriginalStream != events.OrdersStream ||
		l.OriginalSeq == 0 || l.Deliveries != 1 || l.MsgID != "poison-1" || !strings.Contains(l.Error, "malformed") ||
		l.DeadLetteredAt.IsZero() || string(l.PayloadBase64) != "this is not an event" ||
		len(l.Headers["traceparent"]) != 1 {
		t.Errorf("show %d: %+v", malformed.Seq, l)
	}
	for path, want := range map[string]int{"/api/v1/admin/dead-letters/999": 404, "/api/v1/admin/dead-letters/x": 400, "/api/v1/admin/dead-letters/0": 400} {
		r := c.admin("GET", path, nil)
		if r.Status != want {
			t.Errorf("GET %s: %d, want %d", path, r.Status, want)
		}
		asProblem(t, path, r)
	}

	// Discard one, then a filtered set; an empty selection is refused.
	path := fmt.Sprintf("/api/v1/admin/dead-letters/%d", malformed.Seq)
	if r := c.admin("DELETE", path, nil); r.Status != http.StatusNoContent {
		t.Fatalf("discard: %d %s", r.Status, r.Body)
	}
	if r := c.admin("DELETE", path, nil); r.Status != http.StatusNotFound {
		t.Errorf("discard again: %d, want 404", r.Status)
	}
	if r := c.admin("POST", "/api/v1/admin/discard", map[string]any{}); r.Status != http.StatusBadRequest {
		t.Errorf("discard with no selection: %d, want 400: %s", r.Status, r.Body)
	}
	r = c.admin("POST", "/api/v1/admin/discard", map[string]any{"consumer": "inventory"})
	var discarded struct {
		Discarded []uint64 `json:"discarded"`
		More      bool     `json:"more"`
	}
	r.decode(t, &discarded)
	if r.Status != http.StatusOK || len(discarded.Discarded) != 1 || discarded.Discarded[0] != unknownInv.Seq || discarded.More {
		t.Errorf("discard consumer=inventory: %d %s, want dead letter %d", r.Status, r.Body, unknownInv.Seq)
	}
	if left := c.deadLetters("").Items; len(left) != 1 || left[0].Seq != unknownOrder.Seq {
		t.Errorf("left: %+v, want dead letter %d only", left, unknownOrder.Seq)
	}
}

// The admin API takes the admin key only: the API key is 403, no key or a
// wrong one 401, each as problem+json; the admin key opens nothing else.
func TestAdminAPIRefusesOtherKeys(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	for _, tc := range []struct {
		name, path, header string
		want               int
	}{
		{"API key", "/api/v1/admin/dead-letters", "Bearer " + testKey, http.StatusForbidden},
		{"no key", "/api/v1/admin/dead-letters", "", http.StatusUnauthorized},
		{"wrong key", "/api/v1/admin/dead-letters", "Bearer nope", http.StatusUnauthorized},
		{"API key, replay", "/api/v1/admin/replay", "Bearer " + testKey, http.StatusForbidden},
		{"admin key on orders", "/api/v1/orders", "Bearer " + testAdminKey, http.StatusUnauthorized},
	} {
		method := "GET"
		if strings.HasSuffix(tc.path, "replay") {
			method = "POST"
		}
		r := c.do(method, tc.path, nil, "Authorization", tc.header)
		if r.Status != tc.want {
			t.Errorf("%s: %s %s: status %d, want %d: %s", tc.name, method, tc.path, r.Status, tc.want, r.Body)
			continue
		}
		asProblem(t, tc.name, r)
	}
}

// startRetrying starts a system whose consumers give up after 3 quick
// deliveries instead of 10 over two minutes.
func startRetrying(t *testing.T) deployment {
	t.Helper()
	sys, err := startWith(t, t.TempDir(), retry{3, []time.Duration{10 * time.Millisecond, 50 * time.Millisecond}})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { stop(t, sys) })
	return sys
}

// breakInventoryDB takes the inbox table away from the inventory service's
// database, as an outage of its database would: every event it consumes
// fails with a transient error, while it still answers HTTP. The returned
// function ends the outage.
func breakInventoryDB(t *testing.T, sys deployment) (restore func()) {
	t.Helper()
	ctx := context.Background()
	_, db := databases(t, sys)
	if _, err := db.ExecContext(ctx, `ALTER TABLE inbox RENAME TO inbox_away`); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := db.ExecContext(ctx, `ALTER TABLE inbox_away RENAME TO inbox`); err != nil {
			t.Fatal(err)
		}
	}
}

// deadLetteredOrder places an order during an outage of the inventory
// database that outlasts the retries, and returns the order and the dead
// letter of its order.created, with the outage over.
func deadLetteredOrder(t *testing.T, sys deployment, c *client) (orderView, dlq.Letter) {
	t.Helper()
	c.setStock("A-1", 10)
	restore := breakInventoryDB(t, sys)
	o := c.place("c-1", item{"A-1", 3})
	l := c.waitDeadLetters("?consumer=inventory", 1)[0]
	restore()
	if l.Type != string(events.OrderCreated) || l.OriginalSubject != "orders.created" || l.Deliveries != 3 {
		t.Fatalf("dead letter: %+v, want the order.created after 3 deliveries", l)
	}
	// Dead, not delayed: the outage is over and nothing happens by itself.
	if got := c.do("GET", "/api/v1/orders/"+o.ID+"?wait=500ms", nil); !strings.Contains(string(got.Body), `"PENDING"`) {
		t.Fatalf("order after its event was dead-lettered: %s, want PENDING", got.Body)
	}
	if s := c.stock("A-1"); s.Reserved != 0 {
		t.Fatalf("reserved %d before the replay, want 0", s.Reserved)
	}
	return o, l
}

// An event dead-lettered because the inventory database was down longer
// than the retries last brings its order to its final state once replayed
// after the outage; replaying it a second time changes nothing.
func TestReplayAfterLongOutage(t *testing.T) {
	sys := startRetrying(t)
	c := newClient(t, sys)
	o, l := deadLetteredOrder(t, sys, c)

	path := fmt.Sprintf("/api/v1/admin/dead-letters/%d/replay", l.Seq)
	r := c.admin("POST", path, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("replay: %d %s", r.Status, r.Body)
	}
	if r := c.admin("POST", path, nil); r.Status != http.StatusNotFound {
		t.Fatalf("second replay: %d %s, want 404 (replayed already)", r.Status, r.Body)
	}
	if got := c.final(o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order after the replay: %s, want CONFIRMED", got.Status)
	}
	// Inventory's cache entry goes just after its commit, which the reply
	// may overtake: a moment to settle.
	var s stockView
	settle(t, 5*time.Second, func() bool { s = c.stock("A-1"); return s.Reserved == 3 })
	if s.Reserved != 3 {
		t.Errorf("reserved %d after the replay, want 3", s.Reserved)
	}
	if left := c.deadLetters("").Items; len(left) != 0 {
		t.Errorf("dead letters left: %+v", left)
	}
	checkInvariants(t, sys)
}

// A dead letter whose event reached its consumer another way meanwhile (a
// relay's resend after a crash, say) is replayed to no effect: the inbox
// knows the event.
func TestReplayOfAppliedEventChangesNothing(t *testing.T) {
	sys := startRetrying(t)
	c := newClient(t, sys)
	o, l := deadLetteredOrder(t, sys, c)

	r := c.admin("GET", fmt.Sprintf("/api/v1/admin/dead-letters/%d", l.Seq), nil)
	var full dlq.Letter
	r.decode(t, &full)
	publishRaw(t, sys, broker.Message{ID: "resend-" + full.MsgID, Subject: full.OriginalSubject, Data: full.Payload})
	if got := c.final(o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order after the resend: %s, want CONFIRMED", got.Status)
	}

	r = c.admin("POST", "/api/v1/admin/replay", map[string]any{"type": string(events.OrderCreated)})
	if r.Status != http.StatusOK || !strings.Contains(string(r.Body), fmt.Sprintf(`"replayed":[%d]`, l.Seq)) {
		t.Fatalf("replay by type: %d %s", r.Status, r.Body)
	}
	waitConsumed(t, sys, events.OrdersStream, "inventory")
	if s := c.stock("A-1"); s.Reserved != 3 {
		t.Errorf("reserved %d after replaying an applied event, want 3", s.Reserved)
	}
	if left := c.deadLetters("").Items; len(left) != 0 {
		t.Errorf("dead letters left: %+v", left)
	}
	checkInvariants(t, sys)
}

// waitConsumed waits until consumer has acknowledged everything in stream.
func waitConsumed(t *testing.T, sys deployment, stream, consumer string) {
	t.Helper()
	ctx := context.Background()
	conn, err := sys.Broker(ctx, "test-observer")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, 10*time.Second, consumer+" to acknowledge all of "+stream, func() bool {
		cons, err := conn.JetStream().Consumer(ctx, stream, consumer)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.NumRedelivered == 0
	})
}
