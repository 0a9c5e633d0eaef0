package broker_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// The bite test for PublishBatch: when some messages of a batch are stored
// and others are not, the batch fails and says how many were not.
func TestPublishBatchReportsPartialFailure(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	batch := []broker.Message{
		{ID: "a", Subject: "orders.created", Data: []byte("a")},
		{ID: "b", Subject: "nostream.created", Data: []byte("b")}, // no stream captures it
		{ID: "c", Subject: "orders.created", Data: []byte("c")},
	}
	err := c.PublishBatch(t.Context(), batch)
	if err == nil {
		t.Fatal("PublishBatch with a message no stream stores: got nil, want an error")
	}
	if !strings.Contains(err.Error(), "1 of 3 messages not acknowledged") {
		t.Errorf("PublishBatch error: got %q, want it to say 1 of 3 messages not acknowledged", err)
	}
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("PublishBatch error: got %v, want it to wrap the no-stream error", err)
	}
	if got := streamMsgs(t, c, eventsStream); got != 2 {
		t.Errorf("stream messages: got %d, want the 2 that were acknowledged", got)
	}
}

// stored reads every message of stream, in stream order.
func stored(t *testing.T, c *broker.Conn, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	st, err := c.JetStream().Stream(t.Context(), stream)
	if err != nil {
		t.Fatalf("Stream(%s): %v", stream, err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		out = append(out, m)
	}
	return out
}

// ids lists the Nats-Msg-Id of each message.
func ids(ms []*jetstream.RawStreamMsg) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Header.Get(jetstream.MsgIDHeader)
	}
	return out
}

func msgIDs(ms []broker.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// A batch for one stream goes as one atomic batch (the server stores each
// message with the batch's id), in the order given, and a batch above the
// server's limit of 1,000 is cut in two.
func TestPublishBatchIsAtomicAndOrdered(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	batch := msgs("created", 0, 1200)
	if err := c.PublishBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	got := stored(t, c, eventsStream)
	if !slices.Equal(ids(got), msgIDs(batch)) {
		t.Fatalf("stored ids: got %d in this order %v..., want the %d published, in order", len(got), ids(got)[:min(5, len(got))], len(batch))
	}
	batches := map[string]int{}
	for _, m := range got {
		batches[m.Header.Get("Nats-Batch-Id")]++
		if m.Header.Get("traceparent") == "" {
			t.Fatalf("message %s lost its own headers: %v", m.Header.Get(jetstream.MsgIDHeader), m.Header)
		}
	}
	if len(batches) != 2 || batches[""] != 0 {
		t.Errorf("atomic batches: got %v (id -> messages), want two batches (1000 and 200) and no message outside one", batches)
	}
}

// A short batch (under 8 messages), or a long one whose runs for one
// stream are short, goes as pipelined single publishes, quicker than an
// atomic batch's staging: no message carries a batch id.
func TestPublishBatchShortGoesOneByOne(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	short := msgs("created", 0, 7)
	var runs []broker.Message // 21 messages, 7 by 7 for each stream in turn
	for i := range 21 {
		m := broker.Message{ID: fmt.Sprintf("r-%d", i), Subject: "orders.created", Data: []byte("x")}
		if i/7%2 == 1 {
			m.Subject = "dlq.inventory"
		}
		runs = append(runs, m)
	}
	for _, batch := range [][]broker.Message{short, runs} {
		if err := c.PublishBatch(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
	}
	for _, stream := range []string{eventsStream, dlqStream} {
		for _, m := range stored(t, c, stream) {
			if id := m.Header.Get("Nats-Batch-Id"); id != "" {
				t.Fatalf("%s: message %s was stored in atomic batch %s; want a single publish", stream, m.Header.Get(jetstream.MsgIDHeader), id)
			}
		}
	}
	if got, want := ids(stored(t, c, eventsStream)), append(msgIDs(short), msgIDs(slices.Concat(runs[:7], runs[14:]))...); !slices.Equal(got, want) {
		t.Errorf("%s: got %v, want %v in order", eventsStream, got, want)
	}
}

// Resending a batch that was stored, in whole or in part (a relay that
// crashed before marking it), stores each message once: the server refuses
// an atomic batch holding a duplicate, and the messages then go one by one,
// where duplicates are dropped alone.
func TestPublishBatchResendStoresEachMessageOnce(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	batch := msgs("created", 0, 80)
	if err := c.PublishBatch(t.Context(), batch[:40]); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.PublishBatch(t.Context(), batch); err != nil {
			t.Fatalf("resending a batch whose first part is stored: %v", err)
		}
	}
	if got := ids(stored(t, c, eventsStream)); !slices.Equal(got, msgIDs(batch)) {
		t.Errorf("stored ids: got %v, want each once, in order: %v", got, msgIDs(batch))
	}
}

// One message the stream refuses fails alone: the others of its batch are
// stored, in order.
func TestPublishBatchRefusedMessageFailsAlone(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	batch := msgs("created", 0, 40)
	batch[2].Header = map[string]string{"Nats-Expected-Stream": "ELSEWHERE"} // the stream refuses it
	err := c.PublishBatch(t.Context(), batch)
	if err == nil || !strings.Contains(err.Error(), "1 of 40 messages not acknowledged") {
		t.Fatalf("PublishBatch with one refused message: got %v, want 1 of 40 messages not acknowledged", err)
	}
	want := msgIDs(slices.Delete(slices.Clone(batch), 2, 3))
	if got := ids(stored(t, c, eventsStream)); !slices.Equal(got, want) {
		t.Errorf("stored ids: got %v, want the other 39 in order: %v", got, want)
	}
}

// Messages for two streams in one batch go as one atomic batch per run of
// the same stream; each stream gets its messages in order.
func TestPublishBatchAcrossStreams(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	ensureStreams(t, c)
	var batch, toEvents, toDLQ []broker.Message
	for i := range 160 {
		m := broker.Message{ID: fmt.Sprintf("m-%d", i), Subject: "orders.created", Data: []byte("x")}
		if i/40%2 == 1 { // forty by forty
			m.Subject = "dlq.inventory"
			toDLQ = append(toDLQ, m)
		} else {
			toEvents = append(toEvents, m)
		}
		batch = append(batch, m)
	}
	if err := c.PublishBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	for stream, want := range map[string][]broker.Message{eventsStream: toEvents, dlqStream: toDLQ} {
		got := stored(t, c, stream)
		if !slices.Equal(ids(got), msgIDs(want)) {
			t.Errorf("%s: got %v, want %v", stream, ids(got), msgIDs(want))
		}
		for _, m := range got {
			if m.Header.Get("Nats-Batch-Id") == "" {
				t.Errorf("%s: message %s was not stored as part of an atomic batch", stream, m.Header.Get(jetstream.MsgIDHeader))
			}
		}
	}
}

// A stream made without atomic publish (by an older converge, or by hand)
// still takes a batch, one message at a time.
func TestPublishBatchWithoutAtomicPublish(t *testing.T) {
	s := brokertest.Start(t)
	c := connect(t, s)
	if _, err := c.JetStream().CreateStream(t.Context(), jetstream.StreamConfig{Name: eventsStream, Subjects: []string{"orders.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	batch := msgs("created", 0, 40)
	if err := c.PublishBatch(t.Context(), batch); err != nil {
		t.Fatal(err)
	}
	if got := ids(stored(t, c, eventsStream)); !slices.Equal(got, msgIDs(batch)) {
		t.Errorf("stored ids: got %v, want %v", got, msgIDs(batch))
	}
}

// The bite test for a batch whose streams cannot be looked up: a cluster
// between meta leaders leaves the lookup unanswered while the stream
// leaders still store messages, so the batch goes one by one instead of
// failing. Here the user may not ask for stream names at all.
func TestPublishBatchWithoutStreamLookup(t *testing.T) {
	const user, password = "relay", "no-names-for-me"
	s, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: user, Password: password, Permissions: &natsserver.Permissions{
			Publish: &natsserver.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.NAMES"}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: []string{s.ClientURL()}, Name: t.Name(), User: user, Password: password,
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ensureStreams(t, c)
	batch := msgs("created", 0, 40)
	if err := c.PublishBatch(t.Context(), batch); err != nil {
		t.Fatalf("PublishBatch without stream names: %v", err)
	}
	if got := ids(stored(t, c, eventsStream)); !slices.Equal(got, msgIDs(batch)) {
		t.Errorf("stored: got %v, want %v in order", got, msgIDs(batch))
	}
}

// The bite test for ClientConfig.InProcess: the client reaches the server
// through memory, so it works with no server listening at its URL, and
// comes back through the provider after the server restarts.
func TestInProcessConnection(t *testing.T) {
	var current struct {
		sync.Mutex
		s *broker.Server
	}
	current.s = brokertest.Start(t)
	provider := inProcessFunc(func() (net.Conn, error) {
		current.Lock()
		defer current.Unlock()
		if current.s == nil {
			return nil, errors.New("stopped")
		}
		return current.s.InProcessConn()
	})
	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: []string{"nats://127.0.0.1:1"}, Name: t.Name(), InProcess: provider, // nothing listens there
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("Dial in process: %v", err)
	}
	t.Cleanup(c.Close)
	ensureStreams(t, c)
	if err := c.PublishBatch(t.Context(), msgs("created", 0, 3)); err != nil {
		t.Fatalf("PublishBatch in process: %v", err)
	}

	current.Lock()
	old := current.s
	current.s = nil
	current.Unlock()
	next := brokertest.Restart(t, old)
	current.Lock()
	current.s = next
	current.Unlock()
	publishEventually(t, c, msgs("created", 3, 6))
	if got := streamMsgs(t, c, eventsStream); got != 6 {
		t.Errorf("stream messages after the restart: got %d, want 6", got)
	}
}

type inProcessFunc func() (net.Conn, error)

func (f inProcessFunc) InProcessConn() (net.Conn, error) { return f() }
