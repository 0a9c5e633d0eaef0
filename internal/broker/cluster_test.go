package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// TestClusterLeaderFailover runs a 3-node cluster with an R3 stream, stops
// the stream leader and shows that publishing and consuming go on with two
// nodes, that nothing acknowledged is lost, and that the stopped node
// catches up once it is back.
func TestClusterLeaderFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster failover waits for leader elections")
	}
	const user, password = "converge", "cluster-client-secret"
	cl := brokertest.StartCluster(t, 3, brokertest.ClusterOptions{
		User: user, Password: password,
		RouteUser: "route", RoutePassword: "cluster-route-secret",
	})
	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: cl.URLs(), Name: t.Name(), User: user, Password: password,
	}, brokertest.Logger(t).With("side", "client"))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(c.Close)

	for _, sc := range []broker.StreamConfig{
		{Name: eventsStream, Subjects: []string{"orders.>"}, Replicas: 3},
		{Name: dlqStream, Subjects: []string{"dlq.>"}, Replicas: 3},
	} {
		cl.Wait("EnsureStream "+sc.Name, func() error { return c.EnsureStream(t.Context(), sc) })
	}
	info := clusterStreamInfo(t, cl, c)
	if got := len(info.Cluster.Replicas) + 1; got != 3 || info.Config.Replicas != 3 {
		t.Fatalf("stream %s: got %d replicas configured, %d peers, want 3 and 3", eventsStream, info.Config.Replicas, got)
	}

	cc := broker.ConsumerConfig{Stream: eventsStream, Durable: "inventory"}
	cl.Wait("EnsureConsumer", func() error { return c.EnsureConsumer(t.Context(), cc) })
	cc.BindOnly = true
	r := &recorder{}
	startConsume(t, c, cc, r.handle)

	// acked holds the IDs of every message PublishBatch reported stored.
	var acked []string
	publish := func(batch []broker.Message) {
		t.Helper()
		cl.Wait(fmt.Sprintf("PublishBatch of %s..%s", batch[0].ID, batch[len(batch)-1].ID), func() error {
			return c.PublishBatch(t.Context(), batch)
		})
		for _, m := range batch {
			acked = append(acked, m.ID)
		}
	}
	publish(msgs("before", 0, 20))
	waitConsumed(t, cl, r, acked)

	leader := info.Cluster.Leader
	li := cl.Index(leader)
	if li < 0 {
		t.Fatalf("stream leader %q is not a node of the cluster", leader)
	}
	cl.Stop(li)
	t.Logf("stopped stream leader %s", leader)

	publish(msgs("during", 0, 20))
	info = clusterStreamInfo(t, cl, c)
	if info.Cluster.Leader == leader {
		t.Fatalf("stream leader after stopping %s: still %s", leader, info.Cluster.Leader)
	}
	t.Logf("new stream leader %s", info.Cluster.Leader)
	waitConsumed(t, cl, r, acked)

	cl.Start(li)
	publish(msgs("after", 0, 20))
	waitConsumed(t, cl, r, acked)
	cl.Wait(leader+" to catch up on "+eventsStream, func() error {
		info := clusterStreamInfo(t, cl, c)
		for _, p := range info.Cluster.Replicas {
			if p.Name == leader {
				if !p.Current || p.Offline || p.Lag != 0 {
					return fmt.Errorf("peer %s: current=%v offline=%v lag=%d", p.Name, p.Current, p.Offline, p.Lag)
				}
				return nil
			}
		}
		if info.Cluster.Leader == leader {
			return nil // elected again, so it has everything
		}
		return fmt.Errorf("%s is not among the peers %v", leader, peerNames(info))
	})

	// Every acknowledged message is in the stream exactly once.
	info = clusterStreamInfo(t, cl, c)
	if info.State.Msgs != uint64(len(acked)) {
		t.Errorf("stream messages: got %d, want %d (one per acknowledged message)", info.State.Msgs, len(acked))
	}
	stored := map[string]bool{}
	st, err := c.JetStream().Stream(t.Context(), eventsStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			t.Fatalf("GetMsg(%d): %v", seq, err)
		}
		stored[m.Header.Get(jetstream.MsgIDHeader)] = true
	}
	for _, id := range acked {
		if !stored[id] {
			t.Errorf("acknowledged message %s: not in the stream", id)
		}
	}
}

// clusterStreamInfo asks for the events stream's info until the cluster
// can answer (it cannot while electing a leader) and it has a leader.
func clusterStreamInfo(t *testing.T, cl *brokertest.Cluster, c *broker.Conn) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	cl.Wait("stream info with a leader", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		st, err := c.JetStream().Stream(ctx, eventsStream)
		if err != nil {
			return err
		}
		info = st.CachedInfo()
		if info.Cluster == nil || info.Cluster.Leader == "" {
			return errors.New("no leader")
		}
		return nil
	})
	return info
}

func peerNames(info *jetstream.StreamInfo) []string {
	var names []string
	for _, p := range info.Cluster.Replicas {
		names = append(names, p.Name)
	}
	return names
}

// waitConsumed waits until the handler has seen every message in ids.
func waitConsumed(t *testing.T, cl *brokertest.Cluster, r *recorder, ids []string) {
	t.Helper()
	cl.Wait(fmt.Sprintf("%d messages consumed", len(ids)), func() error {
		seen := map[string]bool{}
		for _, d := range r.deliveries() {
			seen[d.Header.Get(jetstream.MsgIDHeader)] = true
		}
		var missing []string
		for _, id := range ids {
			if !seen[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d not consumed yet, e.g. %v", len(missing), missing[:min(3, len(missing))])
		}
		return nil
	})
}
