package outbox_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inbox"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

const waitTimeout = 10 * time.Second

func openDB(t testing.TB) *store.DB {
	t.Helper()
	return openDBAt(t, storetest.URL(t, store.SQLite, "svc"))
}

// openDBAt opens and migrates the database at url; several relays may open
// one database, as instances of a service do.
func openDBAt(t testing.TB, url string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db := storetest.OpenURL(t, url)
	if err := db.Migrate(ctx, outbox.Migrations()); err != nil {
		t.Fatalf("migrate outbox: %v", err)
	}
	if err := db.Migrate(ctx, inbox.Migrations()); err != nil {
		t.Fatalf("migrate inbox: %v", err)
	}
	return db
}

func startBroker(t testing.TB) (*broker.Server, *broker.Conn) {
	t.Helper()
	s := brokertest.Start(t)
	c, err := broker.Connect(context.Background(), s.ClientURL(), "relay-test", brokertest.Logger(t).With("side", "client"))
	if err != nil {
		t.Fatalf("broker.Connect: %v", err)
	}
	t.Cleanup(c.Close)
	for _, sc := range []broker.StreamConfig{
		{Name: events.OrdersStream, Subjects: []string{events.OrdersSubjects}},
		{Name: events.InventoryStream, Subjects: []string{events.InventorySubjects}},
	} {
		if err := c.EnsureStream(context.Background(), sc); err != nil {
			t.Fatalf("EnsureStream(%s): %v", sc.Name, err)
		}
	}
	return s, c
}

// logRecorder forwards to the test log and remembers warning messages.
type logRecorder struct {
	slog.Handler
	mu    *sync.Mutex
	warns *[]string
}

func newLogRecorder(t testing.TB) *logRecorder {
	t.Helper()
	return &logRecorder{Handler: brokertest.Logger(t).Handler(), mu: new(sync.Mutex), warns: new([]string)}
}

func (h *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		*h.warns = append(*h.warns, r.Message)
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{Handler: h.Handler.WithAttrs(as), mu: h.mu, warns: h.warns}
}

func (h *logRecorder) WithGroup(name string) slog.Handler {
	return &logRecorder{Handler: h.Handler.WithGroup(name), mu: h.mu, warns: h.warns}
}

func (h *logRecorder) count(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range *h.warns {
		if strings.Contains(m, substr) {
			n++
		}
	}
	return n
}

// runRelay runs a relay until the returned stop is called (or the test
// ends); stop cancels it and fails the test if Run does not return.
func runRelay(t testing.TB, db *store.DB, c *broker.Conn, log *slog.Logger, cfg outbox.RelayConfig) (*outbox.Relay, func()) {
	t.Helper()
	if log == nil {
		log = brokertest.Logger(t)
	}
	r := outbox.NewRelay(db, c, log, cfg)
	return r, runStarted(t, r)
}

// runStarted runs r until the test ends or the returned stop is called.
func runStarted(t testing.TB, r *outbox.Relay) func() {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitTimeout):
				t.Errorf("Relay.Run did not return %s after cancel", waitTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

var kinds = []struct {
	typ  events.Type
	data func(id string) any
}{
	{events.OrderCreated, func(id string) any {
		return events.OrderCreatedData{OrderID: id, CustomerID: "c", Items: []events.Item{{SKU: "A", Quantity: 1}}}
	}},
	{events.StockReserved, func(id string) any { return events.StockReservedData{OrderID: id} }},
	{events.OrderCancelled, func(id string) any { return events.OrderCancelledData{OrderID: id} }},
	{events.StockReleased, func(id string) any { return events.StockReleasedData{OrderID: id} }},
}

// newEvents returns n events cycling through order and inventory types.
func newEvents(t testing.TB, n int, prefix string) []events.Envelope {
	t.Helper()
	out := make([]events.Envelope, n)
	for i := range out {
		k := kinds[i%len(kinds)]
		id := prefix + "-" + string(rune('a'+i%26)) + "-" + time.Now().Format("150405.000000")
		e, err := events.New("converge/test", k.typ, id, k.data(id), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			e.TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		}
		out[i] = e
	}
	return out
}

// add writes es to the outbox in one committed transaction.
func add(t testing.TB, db *store.DB, es []events.Envelope) {
	t.Helper()
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		for _, e := range es {
			if err := outbox.Add(context.Background(), tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("outbox.Add: %v", err)
	}
}

func unpublished(t testing.TB, db *store.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM outbox WHERE published_at IS NULL`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func streamMsgs(t testing.TB, c *broker.Conn, name string) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	st, err := c.JetStream().Stream(ctx, name)
	if err != nil {
		t.Fatalf("Stream(%s): %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatalf("stream %s info: %v", name, err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("stream %s message %d: %v", name, seq, err)
		}
		out = append(out, m)
	}
	return out
}

// checkStreams checks that the two streams hold exactly want (in order per
// stream), each under its broker subject with Nats-Msg-Id = event id.
func checkStreams(t testing.TB, c *broker.Conn, want []events.Envelope) {
	t.Helper()
	byStream := map[string][]events.Envelope{}
	for _, e := range want {
		name := events.InventoryStream
		if strings.HasPrefix(e.BrokerSubject(), "orders.") {
			name = events.OrdersStream
		}
		byStream[name] = append(byStream[name], e)
	}
	for _, name := range []string{events.OrdersStream, events.InventoryStream} {
		msgs := streamMsgs(t, c, name)
		var gotIDs, wantIDs []string
		for _, m := range msgs {
			gotIDs = append(gotIDs, m.Header.Get(jetstream.MsgIDHeader))
		}
		for _, e := range byStream[name] {
			wantIDs = append(wantIDs, e.ID)
		}
		if !slices.Equal(gotIDs, wantIDs) {
			t.Errorf("stream %s Nats-Msg-Ids:\n got %v\nwant %v", name, gotIDs, wantIDs)
			continue
		}
		for i, m := range msgs {
			e := byStream[name][i]
			got, err := events.Decode(m.Data)
			if err != nil {
				t.Errorf("stream %s message %d: %v", name, m.Sequence, err)
				continue
			}
			if got.ID != e.ID || got.Type != e.Type || got.Subject != e.Subject || string(got.Data) != string(e.Data) {
				t.Errorf("stream %s message %d: got %+v, want %+v", name, m.Sequence, got, e)
			}
			if m.Subject != e.BrokerSubject() {
				t.Errorf("stream %s message %d: subject %q, want %q", name, m.Sequence, m.Subject, e.BrokerSubject())
			}
			if ct := m.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
				t.Errorf("stream %s message %d: Content-Type %q, want application/cloudevents+json", name, m.Sequence, ct)
			}
			if tp := m.Header.Get("traceparent"); tp != e.TraceParent {
				t.Errorf("stream %s message %d: traceparent %q, want %q", name, m.Sequence, tp, e.TraceParent)
			}
		}
	}
}

func TestRelayPublishesCommittedRowsInOrder(t *testing.T) {
	db := openDB(t)
	_, c := startBroker(t)

	first, second := newEvents(t, 7, "first"), newEvents(t, 6, "second")
	add(t, db, first)
	// A rolled-back transaction leaves nothing to publish.
	boom := errors.New("boom")
	rolledBack := newEvents(t, 4, "rolledback")
	err := db.InTx(context.Background(), func(tx *store.Tx) error {
		for _, e := range rolledBack {
			if err := outbox.Add(context.Background(), tx, e); err != nil {
				return err
			}
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx: got %v, want %v", err, boom)
	}
	add(t, db, second)

	before := time.Now().UnixMicro()
	_, stop := runRelay(t, db, c, nil, outbox.RelayConfig{Batch: 2, Poll: 10 * time.Second})
	waitFor(t, "every row to be published", waitTimeout, func() bool { return unpublished(t, db) == 0 })
	stop()

	all := slices.Concat(first, second)
	checkStreams(t, c, all)

	rows, err := db.QueryContext(context.Background(), `SELECT event_id, published_at FROM outbox ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var (
			id string
			at sql.NullInt64
		)
		if err := rows.Scan(&id, &at); err != nil {
			t.Fatal(err)
		}
		if !at.Valid || at.Int64 < before {
			t.Errorf("row %s: published_at %v, want set after the relay started (%d)", id, at, before)
		}
		ids = append(ids, id)
	}
	var wantIDs []string
	for _, e := range all {
		wantIDs = append(wantIDs, e.ID)
	}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("outbox rows:\n got %v\nwant %v (the rolled-back rows must not exist)", ids, wantIDs)
	}
}

// While the broker connection is down a round reads nothing: the retries
// of an outage cost neither a read of the outbox nor a span per row.
func TestRelayDoesNotReadWhileDisconnected(t *testing.T) {
	db := openDB(t)
	s, c := startBroker(t)
	r := outbox.NewRelay(db, c, brokertest.Logger(t), outbox.RelayConfig{})
	reads := 0
	outbox.SetBeforePublish(r, func(int) { reads++ })
	s.Shutdown()
	waitFor(t, "the client to see the outage", waitTimeout, func() bool { return !c.Connected() })
	add(t, db, newEvents(t, 3, "during"))
	if n, err := outbox.Round(t.Context(), r); err == nil || n != 0 {
		t.Fatalf("a round without the broker: got %d published, err %v; want 0 and an error", n, err)
	}
	if reads != 0 {
		t.Errorf("batches read without the broker: got %d, want 0", reads)
	}
}

func TestRelayRetriesWhileBrokerIsDown(t *testing.T) {
	db := openDB(t)
	s, c := startBroker(t)
	logs := newLogRecorder(t)
	r, _ := runRelay(t, db, c, slog.New(logs), outbox.RelayConfig{Batch: 3, Poll: 10 * time.Second, MaxBackoff: 200 * time.Millisecond})

	before := newEvents(t, 4, "before")
	add(t, db, before)
	r.Notify()
	waitFor(t, "the rows before the outage to be published", waitTimeout, func() bool { return unpublished(t, db) == 0 })

	s.Shutdown()
	waitFor(t, "the client to see the outage", waitTimeout, func() bool { return !c.Connected() })
	during := newEvents(t, 8, "during")
	add(t, db, during[:5])
	r.Notify()
	time.Sleep(300 * time.Millisecond)
	add(t, db, during[5:])
	r.Notify()
	time.Sleep(300 * time.Millisecond)
	if n := unpublished(t, db); n != len(during) {
		t.Errorf("unpublished rows while the broker is down: got %d, want %d", n, len(during))
	}
	// 100 ms, then 200 ms (the cap) again and again: one warning for each
	// step up, then none for retryWarnEvery (30 s).
	if n := logs.count("retrying"); n != 2 {
		t.Errorf("relay retries logged while the broker is down: got %d, want 2 (one per step of the backoff, then quiet at its cap)", n)
	}

	brokertest.StartWith(t, s.Config())
	// No Notify: the relay's own retry must find the broker back.
	took := waitFor(t, "the rows of the outage to be published", waitTimeout, func() bool { return unpublished(t, db) == 0 })
	t.Logf("published %d rows %s after the restart", len(during), took)

	after := newEvents(t, 2, "after")
	add(t, db, after)
	r.Notify()
	waitFor(t, "the rows after the outage to be published", waitTimeout, func() bool { return unpublished(t, db) == 0 })
	checkStreams(t, c, slices.Concat(before, during, after))
}

func TestRelayNotifyWakesPromptly(t *testing.T) {
	db := openDB(t)
	_, c := startBroker(t)
	r := outbox.NewRelay(db, c, brokertest.Logger(t), outbox.RelayConfig{Poll: 10 * time.Second})
	rounds := make(chan struct{}, 1)
	outbox.SetAfterRound(r, func() {
		select {
		case rounds <- struct{}{}:
		default:
		}
	})
	runStarted(t, r)
	select { // past the relay's first look at the table, which is empty
	case <-rounds:
	case <-time.After(waitTimeout):
		t.Fatal("the relay's first round did not end")
	}

	es := newEvents(t, 2, "woken")
	add(t, db, es)
	// Without a wake-up the 10s poll keeps the rows waiting...
	time.Sleep(300 * time.Millisecond)
	if n := unpublished(t, db); n != len(es) {
		t.Fatalf("unpublished rows before Notify: got %d, want %d (the relay should be asleep)", n, len(es))
	}
	// ...and Notify publishes them at once.
	r.Notify()
	took := waitFor(t, "the rows to be published after Notify", 5*time.Second, func() bool { return unpublished(t, db) == 0 })
	t.Logf("published %s after Notify", took)
	if took > 500*time.Millisecond {
		t.Errorf("publish latency after Notify: got %s, want well under the 1s default poll", took)
	}
	checkStreams(t, c, es)

	// Notify never blocks, even when nobody is listening.
	done := make(chan struct{})
	go func() {
		for range 100 {
			r.Notify()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Error("Notify blocked")
	}
}

func TestRelayFlushesOnCancel(t *testing.T) {
	db := openDB(t)
	_, c := startBroker(t)
	_, stop := runRelay(t, db, c, nil, outbox.RelayConfig{Batch: 2, Poll: 10 * time.Second})
	time.Sleep(200 * time.Millisecond) // past the relay's first look at the table

	es := newEvents(t, 5, "last")
	add(t, db, es) // no Notify: only the final flush can publish them
	start := time.Now()
	stop()
	t.Logf("Run returned %s after cancel", time.Since(start))
	if n := unpublished(t, db); n != 0 {
		t.Errorf("unpublished rows after Run returned: got %d, want 0", n)
	}
	checkStreams(t, c, es)
}

func TestRelayStopsWhileBrokerIsDown(t *testing.T) {
	db := openDB(t)
	s, c := startBroker(t)
	_, stop := runRelay(t, db, c, nil, outbox.RelayConfig{Poll: 10 * time.Second, MaxBackoff: 100 * time.Millisecond})
	s.Shutdown()
	waitFor(t, "the client to see the outage", waitTimeout, func() bool { return !c.Connected() })
	es := newEvents(t, 3, "stranded")
	add(t, db, es)
	start := time.Now()
	stop()
	if took := time.Since(start); took > 6*time.Second {
		t.Errorf("Run took %s to return after cancel with the broker down, want its bounded final flush", took)
	}
	if n := unpublished(t, db); n != len(es) {
		t.Errorf("unpublished rows: got %d, want %d (kept for the next start)", n, len(es))
	}
}

// A crash between the broker's acks and the UPDATE that marks the rows
// leaves them unpublished; the next relay publishes them again and the
// broker's duplicate window (which survives a broker restart) drops them.
func TestRelayRepublishIsDeduplicated(t *testing.T) {
	db := openDB(t)
	s, c := startBroker(t)
	es := newEvents(t, 6, "once")
	add(t, db, es)
	_, stop := runRelay(t, db, c, nil, outbox.RelayConfig{Poll: 10 * time.Second})
	waitFor(t, "the rows to be published", waitTimeout, func() bool { return unpublished(t, db) == 0 })
	stop()

	brokertest.Restart(t, s)
	waitFor(t, "the client to reconnect", waitTimeout, c.Connected)
	// Forget that they were published, as a crash before the mark would.
	if _, err := db.ExecContext(context.Background(), `UPDATE outbox SET published_at = NULL`); err != nil {
		t.Fatal(err)
	}
	_, stop = runRelay(t, db, c, nil, outbox.RelayConfig{Poll: 10 * time.Second})
	waitFor(t, "the rows to be published again", waitTimeout, func() bool { return unpublished(t, db) == 0 })
	stop()
	checkStreams(t, c, es)
}
