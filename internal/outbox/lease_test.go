package outbox_test

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/outbox"
	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// newRelay returns a relay over db that counts the rows it publishes.
func newRelay(t testing.TB, db *store.DB, c *broker.Conn, cfg outbox.RelayConfig, beforePublish func(n int)) (*outbox.Relay, *atomic.Int64) {
	t.Helper()
	r := outbox.NewRelay(db, c, brokertest.Logger(t).With("relay", cfg.Holder), cfg)
	var published atomic.Int64
	outbox.SetBeforePublish(r, func(n int) {
		if beforePublish != nil {
			beforePublish(n)
		}
		published.Add(int64(n))
	})
	return r, &published
}

// publishes counts every message published on the event subjects by
// Nats-Msg-Id, duplicates included: a core subscription sees what the
// stream's de-duplication hides.
func publishes(t testing.TB, c *broker.Conn) func() map[string]int {
	t.Helper()
	var (
		mu      sync.Mutex
		seen    = map[string]int{}
		counted int // callbacks that have counted their message
		subs    []*nats.Subscription
	)
	nc := c.JetStream().Conn()
	for _, subj := range []string{events.OrdersSubjects, events.InventorySubjects} {
		sub, err := nc.Subscribe(subj, func(m *nats.Msg) {
			mu.Lock()
			seen[m.Header.Get(jetstream.MsgIDHeader)]++
			counted++
			mu.Unlock()
		})
		if err != nil {
			t.Fatalf("subscribe %s: %v", subj, err)
		}
		subs = append(subs, sub)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// The snapshot counts every message the server sent before a flush:
	// once the flush's answer is back they have all arrived, and each
	// delivered to its callback has been counted.
	return func() map[string]int {
		t.Helper()
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		var snapshot map[string]int
		waitFor(t, "the test's subscriptions to count every message they were sent", waitTimeout, func() bool {
			delivered, queued := 0, 0
			for _, sub := range subs {
				d, err := sub.Delivered()
				if err != nil {
					t.Fatal(err)
				}
				q, _, err := sub.Pending()
				if err != nil {
					t.Fatal(err)
				}
				delivered, queued = delivered+int(d), queued+q
			}
			mu.Lock()
			defer mu.Unlock()
			snapshot = maps.Clone(seen)
			return queued == 0 && counted == delivered
		})
		return snapshot
	}
}

// publishedOnce fails unless every event of want went out exactly once.
func publishedOnce(t testing.TB, seen func() map[string]int, want []events.Envelope) {
	t.Helper()
	got := seen()
	for _, e := range want {
		if got[e.ID] != 1 {
			t.Errorf("event %s was published %d times, want once", e.ID, got[e.ID])
		}
	}
}

// run runs r until the test ends.
func run(t testing.TB, r *outbox.Relay) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// Two relays on one database, both running: every row is published once,
// by the holder of the lease, in commit order.
func TestTwoRelaysShareOneOutbox(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		url := storetest.URL(t, engine, "svc")
		_, c := startBroker(t)
		dbA, dbB := openDBAt(t, url), openDBAt(t, url)
		seen := publishes(t, c)
		a, pubA := newRelay(t, dbA, c, outbox.RelayConfig{Holder: "a", Poll: 20 * time.Millisecond}, nil)
		b, pubB := newRelay(t, dbB, c, outbox.RelayConfig{Holder: "b", Poll: 20 * time.Millisecond}, nil)
		run(t, a)
		run(t, b)
		var all []events.Envelope
		for i := range 10 {
			es := newEvents(t, 40, "two-"+string(rune('a'+i)))
			add(t, dbA, es)
			a.Notify()
			b.Notify()
			all = append(all, es...)
		}
		waitFor(t, "every row published", waitTimeout, func() bool { return unpublished(t, dbA) == 0 })
		if got := pubA.Load() + pubB.Load(); got != int64(len(all)) {
			t.Errorf("relays published %d + %d rows, want %d in all (no row twice)", pubA.Load(), pubB.Load(), len(all))
		}
		if pubA.Load() != 0 && pubB.Load() != 0 {
			t.Errorf("both relays published (%d and %d rows) while neither stopped; want one lease holder", pubA.Load(), pubB.Load())
		}
		checkStreams(t, c, all)
		publishedOnce(t, seen, all)
	})
}

// A relay that stalls mid-batch past its lease leaves the outbox to
// another, which publishes everything within about a lease; the stalled
// one, when it wakes, publishes nothing, and nothing is lost or doubled.
func TestStalledRelayLosesItsLease(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		const lease = 400 * time.Millisecond
		url := storetest.URL(t, engine, "svc")
		_, c := startBroker(t)
		dbA, dbB := openDBAt(t, url), openDBAt(t, url)
		seen := publishes(t, c)
		stalled, resume := make(chan struct{}), make(chan struct{})
		var once sync.Once
		a, pubA := newRelay(t, dbA, c, outbox.RelayConfig{Holder: "a", Lease: lease, Poll: 20 * time.Millisecond}, func(int) {
			once.Do(func() { close(stalled); <-resume })
		})
		first := newEvents(t, 30, "stall-1")
		add(t, dbA, first)
		run(t, a)
		<-stalled // a holds the lease and has read the batch

		b, pubB := newRelay(t, dbB, c, outbox.RelayConfig{Holder: "b", Lease: lease, Poll: 20 * time.Millisecond}, nil)
		run(t, b)
		took := waitFor(t, "the second relay to publish the stalled batch", waitTimeout, func() bool { return unpublished(t, dbA) == 0 })
		if took > lease+time.Second {
			t.Errorf("takeover took %s, want about the lease (%s)", took, lease)
		}
		second := newEvents(t, 30, "stall-2")
		add(t, dbB, second)
		b.Notify()
		waitFor(t, "the second batch", waitTimeout, func() bool { return unpublished(t, dbA) == 0 })

		close(resume) // a wakes with an old batch and a lease that ran out
		third := newEvents(t, 10, "stall-3")
		add(t, dbA, third)
		a.Notify()
		b.Notify()
		waitFor(t, "the third batch", waitTimeout, func() bool { return unpublished(t, dbA) == 0 })
		if pubA.Load() != 30 { // what it had read before it stalled, counted but never sent
			t.Errorf("the stalled relay went on to publish: %d rows counted, want only the 30 it held when it stalled", pubA.Load())
		}
		if got := pubB.Load(); got != 70 {
			t.Errorf("the relay that took over published %d rows, want 70", got)
		}
		all := append(append(first, second...), third...)
		checkStreams(t, c, all)
		// A late publish by the stalled relay would show up here, even
		// though the stream's de-duplication hides it from checkStreams.
		if err := c.JetStream().Conn().Flush(); err != nil {
			t.Fatal(err)
		}
		publishedOnce(t, seen, all)
	})
}
