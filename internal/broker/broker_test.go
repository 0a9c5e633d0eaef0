package broker_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

const (
	eventsStream = "EVENTS"
	dlqStream    = "DLQ"
	waitTimeout  = 10 * time.Second
)

func connect(t *testing.T, s *broker.Server) *broker.Conn {
	t.Helper()
	c, err := broker.Connect(t.Context(), s.ClientURL(), t.Name(), brokertest.Logger(t).With("side", "client"))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func ensureStreams(t *testing.T, c *broker.Conn) {
	t.Helper()
	for _, sc := range []broker.StreamConfig{
		{Name: eventsStream, Subjects: []string{"orders.>"}},
		{Name: dlqStream, Subjects: []string{"dlq.>"}},
	} {
		if err := c.EnsureStream(t.Context(), sc); err != nil {
			t.Fatalf("EnsureStream(%s): %v", sc.Name, err)
		}
	}
}

// startConsume runs Consume in the background; the returned stop cancels it
// and returns its result. The test fails if Consume ends on its own.
func startConsume(t *testing.T, c *broker.Conn, cfg broker.ConsumerConfig, h broker.BatchHandler) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Consume(ctx, cfg, h) }()
	var once sync.Once
	var result error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case result = <-done:
			case <-time.After(waitTimeout):
				result = errors.New("Consume did not return after cancel")
			}
		})
		return result
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Consume: got %v, want nil", err)
		}
	})
	return stop
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a BatchHandler that remembers what it saw and lets a test
// decide the result per delivery.
type recorder struct {
	mu      sync.Mutex
	seen    []broker.Delivery
	batches []int
	result  func(broker.Delivery) error
}

func (r *recorder) handle(_ context.Context, ds []broker.Delivery) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches = append(r.batches, len(ds))
	errs := make([]error, len(ds))
	for i, d := range ds {
		r.seen = append(r.seen, d)
		if r.result != nil {
			errs[i] = r.result(d)
		}
	}
	return errs
}

func (r *recorder) deliveries() []broker.Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// of returns the deliveries of messages whose data is data.
func (r *recorder) of(data string) []broker.Delivery {
	var out []broker.Delivery
	for _, d := range r.deliveries() {
		if string(d.Data) == data {
			out = append(out, d)
		}
	}
	return out
}

func consumerInfo(t *testing.T, c *broker.Conn, durable string) *jetstream.ConsumerInfo {
	t.Helper()
	cons, err := c.JetStream().Consumer(t.Context(), eventsStream, durable)
	if err != nil {
		t.Fatalf("Consumer(%s): %v", durable, err)
	}
	info, err := cons.Info(t.Context())
	if err != nil {
		t.Fatalf("consumer info: %v", err)
	}
	return info
}

func streamMsgs(t *testing.T, c *broker.Conn, name string) uint64 {
	t.Helper()
	st, err := c.JetStream().Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("Stream(%s): %v", name, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	return info.State.Msgs
}

// waitAllAcked waits until the consumer exists and has acknowledged (or
// terminated) every message up to stream sequence seq.
func waitAllAcked(t *testing.T, c *broker.Conn, durable string, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		var got string
		cons, err := c.JetStream().Consumer(t.Context(), eventsStream, durable)
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = cons.Info(t.Context()); err == nil {
				if info.AckFloor.Stream >= seq && info.NumAckPending == 0 {
					return
				}
				got = fmt.Sprintf("ack floor %d with %d pending", info.AckFloor.Stream, info.NumAckPending)
			}
		}
		if err != nil {
			got = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: got %s, want ack floor %d with 0 pending", durable, got, seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func msgs(prefix string, from, to int) []broker.Message {
	var out []broker.Message
	for i := from; i < to; i++ {
		out = append(out, broker.Message{
			ID:      fmt.Sprintf("%s-%d", prefix, i),
			Subject: "orders." + prefix,
			Data:    fmt.Appendf(nil, "%s-%d", prefix, i),
			Header:  map[string]string{"traceparent": fmt.Sprintf("tp-%s-%d", prefix, i)},
		})
	}
	return out
}

func TestPublishBatchAndConsume(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)

	batch := msgs("created", 0, 20)
	if err := c.PublishBatch(t.Context(), batch); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	// A resend of the first half plus one new message: the duplicates are
	// acknowledged (so the relay can mark them sent) but stored once.
	resend := append(slices.Clone(batch[:10]), msgs("created", 20, 21)...)
	if err := c.PublishBatch(t.Context(), resend); err != nil {
		t.Fatalf("PublishBatch(resend): %v", err)
	}
	if got, want := streamMsgs(t, c, eventsStream), uint64(21); got != want {
		t.Fatalf("stream messages: got %d, want %d", got, want)
	}

	r := &recorder{}
	const maxBatch = 8
	startConsume(t, c, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory", Batch: maxBatch},
		func(ctx context.Context, ds []broker.Delivery) []error {
			time.Sleep(5 * time.Millisecond) // let the next batch pile up
			return r.handle(ctx, ds)
		})
	waitFor(t, "21 deliveries", func() bool { return len(r.deliveries()) >= 21 })
	waitAllAcked(t, c, "inventory", 21)

	got := r.deliveries()
	if len(got) != 21 {
		t.Fatalf("deliveries: got %d, want 21", len(got))
	}
	for i, d := range got {
		wantSeq := uint64(i + 1)
		wantData := fmt.Sprintf("created-%d", i)
		if d.StreamSeq != wantSeq || string(d.Data) != wantData || d.Stream != eventsStream ||
			d.Subject != "orders.created" || d.NumDelivered != 1 {
			t.Errorf("delivery %d: got seq=%d data=%q stream=%q subject=%q delivered=%d, want seq=%d data=%q stream=%q subject=%q delivered=1",
				i, d.StreamSeq, d.Data, d.Stream, d.Subject, d.NumDelivered, wantSeq, wantData, eventsStream, "orders.created")
		}
		if got, want := d.Header.Get("traceparent"), fmt.Sprintf("tp-created-%d", i); got != want {
			t.Errorf("delivery %d traceparent: got %q, want %q", i, got, want)
		}
	}
	r.mu.Lock()
	batches := slices.Clone(r.batches)
	r.mu.Unlock()
	if m := slices.Max(batches); m < 2 || m > maxBatch {
		t.Errorf("batch sizes %v: got largest %d, want between 2 and %d", batches, m, maxBatch)
	}
}

func TestPublishBatchRejectsMissingID(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	err := c.PublishBatch(t.Context(), []broker.Message{{Subject: "orders.created", Data: []byte("x")}})
	if err == nil {
		t.Fatal("PublishBatch without ID: got nil error, want an error")
	}
	if got := streamMsgs(t, c, eventsStream); got != 0 {
		t.Errorf("stream messages: got %d, want 0", got)
	}
}

func TestTransientErrorIsRetried(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)

	backoff := []time.Duration{50 * time.Millisecond, 100 * time.Millisecond}
	var times []time.Time
	r := &recorder{result: func(d broker.Delivery) error {
		times = append(times, time.Now())
		if d.NumDelivered < 3 {
			return errors.New("database is busy")
		}
		return nil
	}}
	startConsume(t, c, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory", Backoff: backoff, MaxDeliver: 5}, r.handle)

	if err := c.PublishBatch(t.Context(), msgs("created", 0, 1)); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	waitAllAcked(t, c, "inventory", 1)
	time.Sleep(200 * time.Millisecond) // a wrong extra redelivery would show up by now

	var got []uint64
	for _, d := range r.deliveries() {
		got = append(got, d.NumDelivered)
	}
	if want := []uint64{1, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("NumDelivered of each delivery: got %v, want %v", got, want)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, want := range backoff {
		if gap := times[i+1].Sub(times[i]); gap < want {
			t.Errorf("gap before delivery %d: got %s, want at least %s", i+2, gap, want)
		}
	}
	if got := streamMsgs(t, c, dlqStream); got != 0 {
		t.Errorf("dead letters: got %d, want 0", got)
	}
}

func TestDeadLetter(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)

	r := &recorder{result: func(d broker.Delivery) error {
		switch string(d.Data) {
		case "poison":
			return broker.Permanent(errors.New("bad payload"))
		case "flaky":
			return errors.New("db down\r\nagain")
		}
		return nil
	}}
	startConsume(t, c, broker.ConsumerConfig{
		Stream: eventsStream, Durable: "inventory", MaxDeliver: 3,
		Backoff: []time.Duration{10 * time.Millisecond, 20 * time.Millisecond},
	}, r.handle)

	bad := []broker.Message{
		{ID: "poison-1", Subject: "orders.poison", Data: []byte("poison"), Header: map[string]string{"traceparent": "tp-poison"}},
		{ID: "flaky-1", Subject: "orders.flaky", Data: []byte("flaky"), Header: map[string]string{"traceparent": "tp-flaky"}},
	}
	before := time.Now().Add(-time.Second)
	if err := c.PublishBatch(t.Context(), bad); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	waitFor(t, "2 dead letters", func() bool { return streamMsgs(t, c, dlqStream) >= 2 })
	waitAllAcked(t, c, "inventory", 2)

	if err := c.PublishBatch(t.Context(), []broker.Message{{ID: "good-1", Subject: "orders.good", Data: []byte("good")}}); err != nil {
		t.Fatalf("PublishBatch(good): %v", err)
	}
	waitAllAcked(t, c, "inventory", 3)
	time.Sleep(100 * time.Millisecond) // a wrong extra redelivery would show up by now

	for data, want := range map[string]int{"poison": 1, "flaky": 3, "good": 1} {
		if got := len(r.of(data)); got != want {
			t.Errorf("handler calls for %s: got %d, want %d", data, got, want)
		}
	}
	if got := streamMsgs(t, c, dlqStream); got != 2 {
		t.Fatalf("dead letters: got %d, want 2", got)
	}

	dlq, err := c.JetStream().Stream(t.Context(), dlqStream)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]string{
		"poison": {
			"Nats-Msg-Id":                "dlq-EVENTS-1",
			broker.HeaderOriginalMsgID:   "poison-1",
			broker.HeaderError:           "permanent: bad payload",
			broker.HeaderOriginalSubject: "orders.poison",
			broker.HeaderOriginalStream:  eventsStream,
			broker.HeaderOriginalSeq:     "1",
			broker.HeaderDeliveries:      "1",
			"traceparent":                "tp-poison",
		},
		"flaky": {
			"Nats-Msg-Id":                "dlq-EVENTS-2",
			broker.HeaderOriginalMsgID:   "flaky-1",
			broker.HeaderError:           "db down  again",
			broker.HeaderOriginalSubject: "orders.flaky",
			broker.HeaderOriginalStream:  eventsStream,
			broker.HeaderOriginalSeq:     "2",
			broker.HeaderDeliveries:      "3",
			"traceparent":                "tp-flaky",
		},
	}
	for seq := uint64(1); seq <= 2; seq++ {
		m, err := dlq.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("dead letter %d: %v", seq, err)
		}
		if m.Subject != "dlq.inventory" {
			t.Errorf("dead letter %d subject: got %q, want %q", seq, m.Subject, "dlq.inventory")
		}
		wantHeaders, ok := want[string(m.Data)]
		if !ok {
			t.Errorf("dead letter %d: got data %q, want poison or flaky", seq, m.Data)
			continue
		}
		delete(want, string(m.Data))
		for k, v := range wantHeaders {
			if got := m.Header.Get(k); got != v {
				t.Errorf("dead letter %s header %s: got %q, want %q", m.Data, k, got, v)
			}
		}
		at, err := time.Parse(time.RFC3339, m.Header.Get(broker.HeaderDeadLetteredAt))
		if err != nil || at.Before(before) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("dead letter %s %s: got %q (%v), want an RFC 3339 time of this test",
				m.Data, broker.HeaderDeadLetteredAt, m.Header.Get(broker.HeaderDeadLetteredAt), err)
		}
	}
}

func TestDeadLetterPublishFailureKeepsMessage(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	// Only the events stream: dead-lettering fails until DLQ exists.
	if err := c.EnsureStream(t.Context(), broker.StreamConfig{Name: eventsStream, Subjects: []string{"orders.>"}}); err != nil {
		t.Fatal(err)
	}
	r := &recorder{result: func(broker.Delivery) error { return broker.Permanent(errors.New("bad payload")) }}
	startConsume(t, c, broker.ConsumerConfig{
		Stream: eventsStream, Durable: "inventory", Backoff: []time.Duration{50 * time.Millisecond},
	}, r.handle)

	if err := c.PublishBatch(t.Context(), msgs("poison", 0, 1)); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	waitFor(t, "a second delivery after the failed dead-letter", func() bool { return len(r.deliveries()) >= 2 })
	if info := consumerInfo(t, c, "inventory"); info.AckFloor.Stream != 0 {
		t.Fatalf("ack floor while dead-lettering fails: got %d, want 0", info.AckFloor.Stream)
	}

	if err := c.EnsureStream(t.Context(), broker.StreamConfig{Name: dlqStream, Subjects: []string{"dlq.>"}}); err != nil {
		t.Fatal(err)
	}
	waitAllAcked(t, c, "inventory", 1)
	if got := streamMsgs(t, c, dlqStream); got != 1 {
		t.Fatalf("dead letters: got %d, want 1", got)
	}
}

func TestServerRestart(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	r := &recorder{}
	startConsume(t, c, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory"}, r.handle)

	if err := c.PublishBatch(t.Context(), msgs("before", 0, 5)); err != nil {
		t.Fatalf("PublishBatch before restart: %v", err)
	}
	waitAllAcked(t, c, "inventory", 5)

	s.Shutdown()
	waitFor(t, "the client to notice the outage", func() bool { return !c.Connected() })
	start := time.Now()
	err := c.PublishBatch(t.Context(), msgs("down", 0, 3))
	if err == nil {
		t.Fatal("PublishBatch while the server is down: got nil error, want an error")
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("PublishBatch while down took %s, want under 1s (err: %v)", took, err)
	}
	t.Logf("PublishBatch while down: %v", err)

	s2 := brokertest.StartWith(t, s.Config())
	if s2.ClientURL() != s.ClientURL() {
		t.Fatalf("ClientURL after restart: got %s, want %s", s2.ClientURL(), s.ClientURL())
	}
	publishEventually(t, c, msgs("after", 0, 5))
	waitAllAcked(t, c, "inventory", 10)

	// Once more with the one-step helper.
	brokertest.Restart(t, s2)
	publishEventually(t, c, msgs("again", 0, 5))
	waitAllAcked(t, c, "inventory", 15)

	if got := streamMsgs(t, c, eventsStream); got != 15 {
		t.Errorf("stream messages after restarts: got %d, want 15", got)
	}
	seen := map[string]int{}
	for _, d := range r.deliveries() {
		seen[string(d.Data)]++
	}
	for _, m := range slices.Concat(msgs("before", 0, 5), msgs("after", 0, 5), msgs("again", 0, 5)) {
		if seen[string(m.Data)] == 0 {
			t.Errorf("message %s: never delivered", m.Data)
		}
	}
	if len(seen) != 15 {
		t.Errorf("distinct messages delivered: got %d, want 15 (%v)", len(seen), seen)
	}
}

// publishEventually retries like the outbox relay does, until the broker is
// back.
func publishEventually(t *testing.T, c *broker.Conn, batch []broker.Message) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		err := c.PublishBatch(t.Context(), batch)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PublishBatch after restart: still failing after %s: %v", waitTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestConsumeStopsCleanly(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	cfg := broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory"}

	// A first run creates the consumer, so its server-side goroutines are
	// part of the baseline; so does publishing one message alone, which
	// starts nats.go's asynchronous publishing on this connection.
	for _, m := range msgs("warmup", 0, 3) {
		if err := c.PublishBatch(t.Context(), []broker.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	r := &recorder{}
	stop := startConsume(t, c, cfg, r.handle)
	waitAllAcked(t, c, "inventory", 3)
	if err := stop(); err != nil {
		t.Fatalf("Consume: got %v, want nil", err)
	}
	time.Sleep(100 * time.Millisecond)
	baseline := runtime.NumGoroutine()

	entered := make(chan struct{})
	release := make(chan struct{})
	handlerCtxErr := make(chan error, 1)
	stop = startConsume(t, c, cfg, func(ctx context.Context, ds []broker.Delivery) []error {
		close(entered)
		<-release
		handlerCtxErr <- ctx.Err()
		return make([]error, len(ds))
	})
	if err := c.PublishBatch(t.Context(), msgs("inflight", 0, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("handler was not called")
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("Consume returned (%v) while the handler still had the batch", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Consume after cancel: got %v, want nil", err)
	}
	if err := <-handlerCtxErr; err != nil {
		t.Errorf("handler ctx after Consume's ctx was cancelled: got %v, want nil (the batch in hand must finish)", err)
	}
	// The in-hand batch was acked before Consume returned (the server
	// applies acks from a queue, so its consumer info may lag a moment).
	waitAllAcked(t, c, "inventory", 4)

	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline+1 {
			break
		}
		if time.Now().After(deadline) {
			var buf strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
			t.Fatalf("goroutines after Consume returned: got %d, want at most %d\n%s", n, baseline+1, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConsumeRejectsBadConfig(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	h := func(context.Context, []broker.Delivery) []error { return nil }
	for _, cfg := range []broker.ConsumerConfig{
		{Durable: "inventory"},
		{Stream: eventsStream},
		{Stream: eventsStream, Durable: "bad.name"},
		{Stream: eventsStream, Durable: "inventory", AckWait: 50 * time.Millisecond},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		err := c.Consume(ctx, cfg, h)
		cancel()
		if err == nil {
			t.Errorf("Consume(%+v): got nil, want an error", cfg)
		}
	}
}

// A batch slower than AckWait keeps its messages: Consume reports them in
// progress, so the server delivers them neither again nor to another
// instance while they are in hand. The handler's deadline is not AckWait.
func TestSlowBatchIsNotDeliveredAgain(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	const ackWait = 500 * time.Millisecond
	entered := make(chan struct{})
	release := make(chan struct{})
	var (
		mu   sync.Mutex
		seen []uint64 // NumDelivered of each delivery
		once sync.Once
	)
	var released sync.Once
	startConsume(t, c, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory", AckWait: ackWait},
		func(ctx context.Context, ds []broker.Delivery) []error {
			mu.Lock()
			for _, d := range ds {
				seen = append(seen, d.NumDelivered)
			}
			mu.Unlock()
			once.Do(func() {
				if dl, ok := ctx.Deadline(); !ok || time.Until(dl) < 10*ackWait {
					t.Errorf("handler deadline in %s, want well past AckWait (%s)", time.Until(dl), ackWait)
				}
				close(entered)
				<-release
			})
			return make([]error, len(ds))
		})
	t.Cleanup(func() { released.Do(func() { close(release) }) }) // runs before Consume's stop
	if err := c.PublishBatch(t.Context(), msgs("slow", 0, 1)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-entered:
	case <-time.After(waitTimeout):
		t.Fatal("handler was not called")
	}
	// Hold the batch for four times AckWait; the server must not count a
	// redelivery meanwhile.
	held := time.Now()
	for time.Since(held) < 4*ackWait {
		if info := consumerInfo(t, c, "inventory"); info.NumRedelivered != 0 {
			t.Fatalf("after holding the batch %s (AckWait %s): %d redelivered, want 0", time.Since(held).Round(time.Millisecond), ackWait, info.NumRedelivered)
		}
		time.Sleep(50 * time.Millisecond)
	}
	released.Do(func() { close(release) })
	waitAllAcked(t, c, "inventory", 1)
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, []uint64{1}) {
		t.Errorf("deliveries (NumDelivered of each): got %v, want [1]", seen)
	}
}

func TestPermanent(t *testing.T) {
	cause := errors.New("bad payload")
	err := broker.Permanent(cause)
	if !errors.Is(err, broker.ErrPermanent) || !errors.Is(err, cause) {
		t.Errorf("Permanent(%v): errors.Is(ErrPermanent)=%v errors.Is(cause)=%v, want both true",
			cause, errors.Is(err, broker.ErrPermanent), errors.Is(err, cause))
	}
	if errors.Is(fmt.Errorf("wrapped: %w", cause), broker.ErrPermanent) {
		t.Error("a plain error: got permanent, want transient")
	}
	if broker.Permanent(nil) != nil {
		t.Error("Permanent(nil): got non-nil, want nil")
	}
}

// If nats.go gives up on a subscription (here: the consumer is deleted
// under it), Consume re-creates the consumer and carries on.
func TestConsumeRecreatesDeletedConsumer(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	r := &recorder{}
	startConsume(t, c, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory"}, r.handle)

	if err := c.PublishBatch(t.Context(), msgs("first", 0, 2)); err != nil {
		t.Fatal(err)
	}
	waitAllAcked(t, c, "inventory", 2)
	if err := c.JetStream().DeleteConsumer(t.Context(), eventsStream, "inventory"); err != nil {
		t.Fatalf("DeleteConsumer: %v", err)
	}
	if err := c.PublishBatch(t.Context(), msgs("second", 0, 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "deliveries after the consumer was deleted", func() bool { return len(r.of("second-1")) > 0 })
	waitAllAcked(t, c, "inventory", 4)
}
