package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/dlq"
)

// rig is a broker with an event stream, the dead-letter stream and one
// consumer ("worker") that dead-letters at once every message whose
// payload starts with "bad", and records everything it receives.
type rig struct {
	t    *testing.T
	conn *broker.Conn
	q    *dlq.Queue
	mu   sync.Mutex
	got  []broker.Delivery
	// poison decides which payloads fail; the test may change it.
	poison func(data []byte) bool
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv := brokertest.Start(t)
	ctx := context.Background()
	conn, err := broker.Connect(ctx, srv.ClientURL(), "dlq-test", brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	for _, sc := range []broker.StreamConfig{
		{Name: "EV", Subjects: []string{"ev.>"}},
		{Name: "DLQ", Subjects: []string{"dlq.>"}},
	} {
		if err := conn.EnsureStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	r := &rig{t: t, conn: conn, q: dlq.New(conn.JetStream(), "DLQ"),
		poison: func(data []byte) bool { return strings.HasPrefix(string(data), "bad") }}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := conn.Consume(cctx, broker.ConsumerConfig{Stream: "EV", Durable: "worker"}, func(_ context.Context, ds []broker.Delivery) []error {
			errs := make([]error, len(ds))
			r.mu.Lock()
			defer r.mu.Unlock()
			for i, d := range ds {
				r.got = append(r.got, d)
				if r.poison(d.Data) {
					errs[i] = broker.Permanent(errors.New("cannot handle " + string(d.Data)))
				}
			}
			return errs
		})
		if err != nil {
			t.Errorf("consume: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *rig) publish(id, subject, data string, header map[string]string) {
	r.t.Helper()
	if err := r.conn.PublishBatch(context.Background(), []broker.Message{{ID: id, Subject: subject, Data: []byte(data), Header: header}}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) setPoison(p func([]byte) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.poison = p
}

// received counts deliveries of data so far.
func (r *rig) received(data string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, d := range r.got {
		if string(d.Data) == data {
			n++
		}
	}
	return n
}

func (r *rig) delivery(data string) broker.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.got) - 1; i >= 0; i-- {
		if string(r.got[i].Data) == data {
			return r.got[i]
		}
	}
	r.t.Fatalf("no delivery of %q", data)
	return broker.Delivery{}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	until := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(until) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) list(f dlq.Filter) dlq.Page {
	r.t.Helper()
	p, err := r.q.List(context.Background(), f)
	if err != nil {
		r.t.Fatalf("list %+v: %v", f, err)
	}
	return p
}

func (r *rig) waitLetters(n int) []dlq.Letter {
	r.t.Helper()
	var items []dlq.Letter
	waitFor(r.t, fmt.Sprintf("%d dead letters", n), func() bool {
		items = r.list(dlq.Filter{Limit: dlq.MaxLimit}).Items
		return len(items) == n
	})
	return items
}

func seqs(ls []dlq.Letter) []uint64 {
	out := make([]uint64, len(ls))
	for i, l := range ls {
		out[i] = l.Seq
	}
	return out
}

func TestListFiltersAndPages(t *testing.T) {
	r := newRig(t)
	r.publish("e-1", "ev.created", `bad {"type":"io.x.created","id":"1"}`, nil)
	r.publish("e-2", "ev.created", `{"type":"io.x.created","id":"2"}`, nil)
	r.publish("e-3", "ev.cancelled", "bad bytes", map[string]string{"ce-type": "io.x.cancelled"})
	r.publish("e-4", "ev.created", "bad again", nil)
	items := r.waitLetters(3)

	l := items[0]
	if l.Consumer != "worker" || l.OriginalSubject != "ev.created" || l.OriginalStream != "EV" || l.OriginalSeq != 1 ||
		l.MsgID != "e-1" || l.Deliveries != 1 || !strings.Contains(l.Error, "cannot handle bad") || l.DeadLetteredAt.IsZero() {
		t.Errorf("first dead letter: %+v", l)
	}
	if l.Headers != nil || l.Payload != nil || l.PayloadBase64 != nil {
		t.Errorf("a listing carries headers or payload: %+v", l)
	}
	if items[1].Type != "io.x.cancelled" {
		t.Errorf("type from ce-type: got %q", items[1].Type)
	}

	for _, tc := range []struct {
		f    dlq.Filter
		want int
	}{
		{dlq.Filter{Consumer: "worker"}, 3},
		{dlq.Filter{Consumer: "other"}, 0},
		{dlq.Filter{Type: "io.x.cancelled"}, 1},
		{dlq.Filter{Reason: "CANNOT HANDLE BAD AGAIN"}, 1},
		{dlq.Filter{Reason: "timeout"}, 0},
	} {
		if got := r.list(tc.f).Items; len(got) != tc.want {
			t.Errorf("list %+v: %d items, want %d", tc.f, len(got), tc.want)
		}
	}

	// Pages of one follow the cursor to the end.
	var walked []uint64
	f := dlq.Filter{Limit: 1}
	for range 5 {
		p := r.list(f)
		walked = append(walked, seqs(p.Items)...)
		if p.Next == "" {
			break
		}
		fmt.Sscan(p.Next, &f.After)
	}
	if fmt.Sprint(walked) != fmt.Sprint(seqs(items)) {
		t.Errorf("paged walk %v, want %v", walked, seqs(items))
	}

	for _, bad := range []dlq.Filter{{Limit: dlq.MaxLimit + 1}, {Limit: -1}, {Consumer: "a.b"}, {Consumer: "*"}} {
		if _, err := r.q.List(context.Background(), bad); !errors.Is(err, dlq.ErrInvalid) {
			t.Errorf("list %+v: error %v, want ErrInvalid", bad, err)
		}
	}
}

func TestGetShowsHeadersAndPayload(t *testing.T) {
	r := newRig(t)
	r.setPoison(func(data []byte) bool { return string(data) != `{"type":"t"}` })
	r.publish("e-1", "ev.created", `bad`, map[string]string{"traceparent": "00-abc-def-01"})
	r.publish("e-2", "ev.created", `{"type":"t"}`, nil)
	r.publish("e-3", "ev.created", `{"type":"t","id":"3"}`, nil)
	items := r.waitLetters(2)

	l, err := r.q.Get(context.Background(), items[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if string(l.PayloadBase64) != "bad" || l.Payload != nil {
		t.Errorf("non-JSON payload: base64 %q, json %s", l.PayloadBase64, l.Payload)
	}
	if got := l.Headers["traceparent"]; len(got) != 1 || got[0] != "00-abc-def-01" {
		t.Errorf("headers: %v", l.Headers)
	}
	if got := l.Headers[broker.HeaderOriginalSubject]; len(got) != 1 || got[0] != "ev.created" {
		t.Errorf("headers: %v", l.Headers)
	}
	l, err = r.q.Get(context.Background(), items[1].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Payload) != `{"type":"t","id":"3"}` || l.Type != "t" {
		t.Errorf("JSON payload %s, type %q", l.Payload, l.Type)
	}
	if _, err := r.q.Get(context.Background(), 999); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("get 999: %v, want ErrNotFound", err)
	}
}

func TestReplayRedeliversToItsConsumerOnce(t *testing.T) {
	r := newRig(t)
	r.publish("e-1", "ev.created", "bad payload", map[string]string{"traceparent": "00-abc-def-01"})
	l := r.waitLetters(1)[0]

	// Fixed meanwhile: the consumer now handles it.
	r.setPoison(func([]byte) bool { return false })

	// Two replays at once: the broker stores one message (same Nats-Msg-Id),
	// and the dead letter goes.
	var wg sync.WaitGroup
	results := make([]dlq.Replayed, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { results[i], errs[i] = r.q.Replay(context.Background(), l.Seq) })
	}
	wg.Wait()
	replayed := 0
	for i := range 2 {
		switch {
		case errs[i] == nil:
			replayed++
			if results[i].Subject != "ev.created" || results[i].Stream != "EV" {
				t.Errorf("replay %d: %+v", i, results[i])
			}
		case errors.Is(errs[i], dlq.ErrNotFound):
		default:
			t.Fatalf("replay %d: %v", i, errs[i])
		}
	}
	if replayed == 0 {
		t.Fatal("neither replay succeeded")
	}
	waitFor(t, "the replayed message", func() bool { return r.received("bad payload") == 2 })
	d := r.delivery("bad payload")
	if d.Header.Get("traceparent") != "00-abc-def-01" || d.Header.Get(dlq.HeaderReplayOf) != fmt.Sprintf("DLQ/%d", l.Seq) {
		t.Errorf("replayed headers: %v", d.Header)
	}
	if d.Header.Get(broker.HeaderError) != "" || d.Header.Get(broker.HeaderOriginalSubject) != "" {
		t.Errorf("replayed message carries the dead-letter headers: %v", d.Header)
	}
	if got := r.list(dlq.Filter{}).Items; len(got) != 0 {
		t.Errorf("dead letters after replay: %v", seqs(got))
	}
	// A third replay finds nothing, and nothing more arrives.
	if _, err := r.q.Replay(context.Background(), l.Seq); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("replay again: %v, want ErrNotFound", err)
	}
	st, err := r.conn.JetStream().Stream(context.Background(), "EV")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("EV holds %d messages, want 2 (the original and one replay)", info.State.Msgs)
	}
}

// A replay whose first attempt was stored but whose dead letter was not
// deleted (a crash in between) is stored once when done again.
func TestReplayAgainAfterLostDeleteIsDeduplicated(t *testing.T) {
	r := newRig(t)
	r.publish("e-1", "ev.created", "bad", nil)
	l := r.waitLetters(1)[0]
	r.setPoison(func([]byte) bool { return false })

	// The first attempt's publish, as Replay makes it, without the delete.
	js := r.conn.JetStream()
	st, err := js.Stream(context.Background(), "DLQ")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(context.Background(), l.Seq)
	if err != nil {
		t.Fatal(err)
	}
	first := dlq.ReplayMsg("DLQ", m, l)
	if _, err := js.PublishMsg(context.Background(), first, jetstream.WithExpectStream("EV")); err != nil {
		t.Fatal(err)
	}
	got, err := r.q.Replay(context.Background(), l.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Duplicate {
		t.Errorf("second replay: %+v, want a duplicate the broker dropped", got)
	}
	waitFor(t, "the replayed message", func() bool { return r.received("bad") == 2 })
	time.Sleep(200 * time.Millisecond) // a second copy would have arrived by now
	if n := r.received("bad"); n != 2 {
		t.Errorf("received %d times, want 2 (original and one replay)", n)
	}
}

func TestDiscardAndBulk(t *testing.T) {
	r := newRig(t)
	for i := range 6 {
		subject := "ev.created"
		if i%2 == 1 {
			subject = "ev.cancelled"
		}
		r.publish(fmt.Sprint("e-", i), subject, fmt.Sprintf(`bad {"type":"%s"} %d`, subject, i), map[string]string{"ce-type": subject})
	}
	items := r.waitLetters(6)
	ctx := context.Background()

	if err := r.q.Discard(ctx, items[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := r.q.Discard(ctx, items[0].Seq); !errors.Is(err, dlq.ErrNotFound) {
		t.Errorf("discard again: %v, want ErrNotFound", err)
	}

	// Bulk, two at a time: the cancelled ones (seqs 2, 4, 6).
	r.setPoison(func([]byte) bool { return false })
	f := dlq.Filter{Type: "ev.cancelled", Limit: 2}
	done, err := r.q.ReplayAll(ctx, f)
	if err != nil || len(done.Seqs) != 2 || !done.More {
		t.Fatalf("replay all, first call: %+v, %v", done, err)
	}
	done, err = r.q.ReplayAll(ctx, f)
	if err != nil || len(done.Seqs) != 1 || done.More {
		t.Fatalf("replay all, second call: %+v, %v", done, err)
	}
	waitFor(t, "3 replays", func() bool {
		n := 0
		for _, i := range []int{1, 3, 5} {
			n += r.received(fmt.Sprintf(`bad {"type":"ev.cancelled"} %d`, i))
		}
		return n == 6
	})
	left := r.list(dlq.Filter{})
	if fmt.Sprint(seqs(left.Items)) != fmt.Sprint([]uint64{items[2].Seq, items[4].Seq}) {
		t.Errorf("left after replaying the cancelled: %v", seqs(left.Items))
	}
	done, err = r.q.DiscardAll(ctx, dlq.Filter{Consumer: "worker"})
	if err != nil || len(done.Seqs) != 2 || done.More {
		t.Fatalf("discard all: %+v, %v", done, err)
	}
	if left := r.list(dlq.Filter{}); len(left.Items) != 0 {
		t.Errorf("left after discarding all: %v", seqs(left.Items))
	}
}
