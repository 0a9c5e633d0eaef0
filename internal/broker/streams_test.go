package broker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// apiObserver sees the JetStream API requests clients send, as the server
// does, so a test can tell whether a create or update went out.
type apiObserver struct {
	t   *testing.T
	nc  *nats.Conn
	sub *nats.Subscription
}

func observeAPI(t *testing.T, s *broker.Server) *apiObserver {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("observer connect: %v", err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatalf("observer subscribe: %v", err)
	}
	// The subscription is in place on the server once this returns.
	if err := nc.Flush(); err != nil {
		t.Fatalf("observer flush: %v", err)
	}
	return &apiObserver{t: t, nc: nc, sub: sub}
}

// writes returns the subjects of the create and update requests seen
// since the last call. A requester has its reply, so the server has
// routed the request to us too; the flush makes sure it also arrived.
func (o *apiObserver) writes() []string {
	o.t.Helper()
	if err := o.nc.Flush(); err != nil {
		o.t.Fatalf("observer flush: %v", err)
	}
	var out []string
	for {
		n, _, err := o.sub.Pending()
		if err != nil {
			o.t.Fatalf("observer pending: %v", err)
		}
		if n == 0 {
			return out
		}
		m, err := o.sub.NextMsg(time.Second)
		if err != nil {
			o.t.Fatalf("observer next: %v", err)
		}
		if strings.Contains(m.Subject, ".CREATE.") || strings.Contains(m.Subject, ".UPDATE.") {
			out = append(out, m.Subject)
		}
	}
}

func streamInfo(t *testing.T, c *broker.Conn, name string) *jetstream.StreamInfo {
	t.Helper()
	st, err := c.JetStream().Stream(t.Context(), name)
	if err != nil {
		t.Fatalf("Stream(%s): %v", name, err)
	}
	return st.CachedInfo()
}

func TestEnsureStreamIsIdempotentAndAppliesLimits(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	obs := observeAPI(t, s)

	cfg := broker.StreamConfig{Name: "LIMITED", Subjects: []string{"lim.a", "lim.b"}, MaxMsgs: 3, MaxBytes: 1 << 20, MaxAge: time.Hour}
	if err := c.EnsureStream(t.Context(), cfg); err != nil {
		t.Fatalf("EnsureStream: %v", err)
	}
	if got := obs.writes(); len(got) != 1 || !strings.Contains(got[0], "STREAM.CREATE.LIMITED") {
		t.Fatalf("API writes of the first EnsureStream: got %v, want one stream create", got)
	}
	created := streamInfo(t, c, "LIMITED")

	// Same settings, subjects in another order: nothing to send.
	cfg.Subjects = []string{"lim.b", "lim.a"}
	for range 2 {
		if err := c.EnsureStream(t.Context(), cfg); err != nil {
			t.Fatalf("EnsureStream again: %v", err)
		}
	}
	if got := obs.writes(); len(got) != 0 {
		t.Fatalf("API writes of EnsureStream on an unchanged stream: got %v, want none", got)
	}
	info := streamInfo(t, c, "LIMITED")
	if !info.Created.Equal(created.Created) {
		t.Errorf("stream Created: got %v, want %v (the stream must not be re-created)", info.Created, created.Created)
	}
	sc := info.Config
	if sc.MaxMsgs != 3 || sc.MaxBytes != 1<<20 || sc.MaxAge != time.Hour || sc.Discard != jetstream.DiscardNew ||
		sc.Replicas != 1 || sc.Duplicates != 2*time.Minute || sc.Storage != jetstream.FileStorage {
		t.Errorf("stream config: got max_msgs=%d max_bytes=%d max_age=%s discard=%s replicas=%d duplicates=%s storage=%s, "+
			"want 3, %d, 1h, DiscardNew, 1, 2m, file", sc.MaxMsgs, sc.MaxBytes, sc.MaxAge, sc.Discard, sc.Replicas, sc.Duplicates, sc.Storage, 1<<20)
	}

	// A full stream refuses new messages and keeps the old ones.
	if err := c.PublishBatch(t.Context(), []broker.Message{
		{ID: "1", Subject: "lim.a", Data: []byte("1")},
		{ID: "2", Subject: "lim.b", Data: []byte("2")},
		{ID: "3", Subject: "lim.a", Data: []byte("3")},
	}); err != nil {
		t.Fatalf("PublishBatch up to the limit: %v", err)
	}
	err := c.PublishBatch(t.Context(), []broker.Message{{ID: "4", Subject: "lim.a", Data: []byte("4")}})
	if err == nil || !strings.Contains(err.Error(), "1 of 1 messages not acknowledged") {
		t.Fatalf("PublishBatch into a full stream: got %v, want 1 of 1 not acknowledged", err)
	}
	t.Logf("full stream: %v", err)
	if st := streamInfo(t, c, "LIMITED").State; st.Msgs != 3 || st.FirstSeq != 1 {
		t.Errorf("full stream state: got %d messages from seq %d, want 3 from seq 1 (nothing dropped)", st.Msgs, st.FirstSeq)
	}

	// A changed limit is one update, and then the stream takes more.
	cfg.MaxMsgs = 4
	if err := c.EnsureStream(t.Context(), cfg); err != nil {
		t.Fatalf("EnsureStream with a new limit: %v", err)
	}
	if got := obs.writes(); len(got) != 1 || !strings.Contains(got[0], "STREAM.UPDATE.LIMITED") {
		t.Fatalf("API writes of EnsureStream with a new limit: got %v, want one stream update", got)
	}
	if err := c.PublishBatch(t.Context(), []broker.Message{{ID: "4", Subject: "lim.a", Data: []byte("4")}}); err != nil {
		t.Fatalf("PublishBatch after raising the limit: %v", err)
	}

	// Without a size limit old messages give way as before.
	if err := c.EnsureStream(t.Context(), broker.StreamConfig{Name: "UNLIMITED", Subjects: []string{"unl.>"}}); err != nil {
		t.Fatal(err)
	}
	if sc := streamInfo(t, c, "UNLIMITED").Config; sc.Discard != jetstream.DiscardOld || sc.MaxMsgs != -1 || sc.MaxBytes != -1 {
		t.Errorf("unlimited stream: got discard=%s max_msgs=%d max_bytes=%d, want DiscardOld, -1, -1", sc.Discard, sc.MaxMsgs, sc.MaxBytes)
	}

	// A MaxAge shorter than the default de-duplication window shortens it.
	if err := c.EnsureStream(t.Context(), broker.StreamConfig{Name: "SHORT", Subjects: []string{"short.>"}, MaxAge: time.Minute}); err != nil {
		t.Fatalf("EnsureStream with MaxAge 1m: %v", err)
	}
	if got := streamInfo(t, c, "SHORT").Config.Duplicates; got != time.Minute {
		t.Errorf("duplicates window with MaxAge 1m: got %s, want 1m", got)
	}
}

func TestEnsureConsumerAndBindOnly(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	obs := observeAPI(t, s)
	cfg := broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory", FilterSubjects: []string{"orders.created"}, BindOnly: true}

	// Bound to a consumer nobody made, Consume waits for it and makes none.
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err := c.Consume(ctx, cfg, (&recorder{}).handle)
	cancel()
	if err != nil {
		t.Fatalf("Consume BindOnly without the consumer: got %v, want nil once ctx is done", err)
	}
	if got := obs.writes(); len(got) != 0 {
		t.Fatalf("API writes of Consume BindOnly: got %v, want none", got)
	}
	if _, err := c.JetStream().Consumer(t.Context(), eventsStream, "inventory"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Fatalf("consumer after Consume BindOnly: got %v, want not found", err)
	}

	for range 2 {
		if err := c.EnsureConsumer(t.Context(), cfg); err != nil {
			t.Fatalf("EnsureConsumer: %v", err)
		}
	}
	if got := obs.writes(); len(got) != 1 {
		t.Fatalf("API writes of EnsureConsumer twice: got %v, want one create", got)
	}

	r := &recorder{}
	stop := startConsume(t, c, cfg, r.handle)
	if err := c.PublishBatch(t.Context(), append(msgs("created", 0, 3), msgs("cancelled", 0, 1)...)); err != nil {
		t.Fatal(err)
	}
	// Seq 4 is filtered out, so the ack floor stops at 3.
	waitAllAcked(t, c, "inventory", 3)
	if got := len(r.deliveries()); got != 3 {
		t.Errorf("deliveries through the filter: got %d, want 3", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// Without BindOnly Consume checks the consumer but need not touch it.
	cfg.BindOnly = false
	stop = startConsume(t, c, cfg, r.handle)
	if err := c.PublishBatch(t.Context(), msgs("created", 3, 4)); err != nil {
		t.Fatal(err)
	}
	waitAllAcked(t, c, "inventory", 5)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := obs.writes(); len(got) != 0 {
		t.Errorf("API writes of Consume on a consumer that fits: got %v, want none", got)
	}
}

// A consumer made by hand with a server-side delivery limit would silently
// stop delivering; Consume refuses to bind to it.
func TestBindOnlyRejectsUnfitConsumer(t *testing.T) {
	for _, tc := range []struct {
		name string
		cc   jetstream.ConsumerConfig
		want string
	}{
		{"max deliver 5", jetstream.ConsumerConfig{Durable: "inventory", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 5}, "max deliver"},
		{"ack wait 10ms", jetstream.ConsumerConfig{Durable: "inventory", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: -1, AckWait: 10 * time.Millisecond}, "ack wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := brokertest.Start(t)
			c := connect(t, s)
			ensureStreams(t, c)
			if _, err := c.JetStream().CreateConsumer(t.Context(), eventsStream, tc.cc); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
			defer cancel()
			err := c.Consume(ctx, broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory", BindOnly: true}, (&recorder{}).handle)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Consume BindOnly on a consumer with %s: got %v, want an error about %s", tc.name, err, tc.want)
			}
		})
	}
}
