package brokertest

import (
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/broker"
)

// defaultClusterTimeout is the shared budget of a cluster test's waits.
// Electing a JetStream leader takes nats-server 4 to 9 seconds, and a
// failover test needs a few elections, so this is well above that yet
// still fails a stuck test within half a minute.
const defaultClusterTimeout = 30 * time.Second

// ClusterOptions configures StartCluster; the zero value is a cluster
// without authentication.
type ClusterOptions struct {
	// Client credentials every node requires (optional).
	User     string
	Password string
	// Route credentials between the nodes (optional; required with User).
	RouteUser     string
	RoutePassword string
	// Timeout is the budget shared by every Wait of the test, counted
	// from StartCluster; default 30s.
	Timeout time.Duration
}

// Cluster is a JetStream cluster of embedded servers in this process.
type Cluster struct {
	t        testing.TB
	name     string
	nodes    []*broker.Server // nil while a node is down
	configs  []broker.ServerConfig
	deadline time.Time
}

// StartCluster starts an n-node JetStream cluster on free ports of
// 127.0.0.1, each node with its own store under t.TempDir(), waits until
// every node serves JetStream, and shuts the nodes down when the test
// ends.
func StartCluster(t testing.TB, n int, opts ClusterOptions) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("StartCluster: n = %d, want at least 1", n)
	}
	if opts.Timeout == 0 {
		opts.Timeout = defaultClusterTimeout
	}
	c := &Cluster{t: t, name: "test-cluster", deadline: time.Now().Add(opts.Timeout)}
	// Every node needs its peers' route ports before any of them starts.
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
	}
	for i := range n {
		c.configs = append(c.configs, broker.ServerConfig{
			Dir:           t.TempDir(),
			Name:          fmt.Sprintf("n%d", i+1),
			ClusterName:   c.name,
			ClusterPort:   ports[i],
			Routes:        slices.Delete(slices.Clone(routes), i, i+1),
			User:          opts.User,
			Password:      opts.Password,
			RouteUser:     opts.RouteUser,
			RoutePassword: opts.RoutePassword,
		})
	}
	c.nodes = make([]*broker.Server, n)
	for i := range n {
		c.Start(i)
	}
	c.WaitReady()
	return c
}

// freePorts returns n ports that were free a moment ago. They are held
// until all are chosen, so they are at least distinct.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i, or nil while it is shut down.
func (c *Cluster) Node(i int) *broker.Server { return c.nodes[i] }

// Index returns the index of the node called name, or -1.
func (c *Cluster) Index(name string) int {
	for i, cfg := range c.configs {
		if cfg.Name == name {
			return i
		}
	}
	return -1
}

// URLs are the client URLs of all nodes, running or not, as a client
// configured for the cluster would list them.
func (c *Cluster) URLs() []string {
	urls := make([]string, len(c.configs))
	for i, cfg := range c.configs {
		urls[i] = fmt.Sprintf("nats://127.0.0.1:%d", cfg.Port)
	}
	return urls
}

// Start starts node i, after StartCluster on the same store directory and
// ports it had, so it rejoins the cluster and catches up.
func (c *Cluster) Start(i int) *broker.Server {
	c.t.Helper()
	if c.nodes[i] != nil {
		c.t.Fatalf("start node %s: already running", c.configs[i].Name)
	}
	s, err := broker.StartServer(c.configs[i], Logger(c.t).With("side", "server", "node", c.configs[i].Name))
	if err != nil {
		c.t.Fatalf("start node %s: %v", c.configs[i].Name, err)
	}
	c.t.Cleanup(s.Shutdown)
	c.nodes[i] = s
	c.configs[i] = s.Config() // the client port it actually bound
	return s
}

// Stop shuts node i down.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	if c.nodes[i] == nil {
		c.t.Fatalf("stop node %s: not running", c.configs[i].Name)
	}
	c.nodes[i].Shutdown()
	c.nodes[i] = nil
}

// WaitReady waits until every running node serves JetStream.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.Wait("every running node to be JetStream-ready", func() error {
		for i, s := range c.nodes {
			if s != nil && !s.JetStreamReady() {
				return fmt.Errorf("node %s not ready", c.configs[i].Name)
			}
		}
		return nil
	})
}

// Wait polls cond until it returns nil. All waits of the cluster share
// one deadline, so a stuck test fails promptly, naming what it waited for
// and cond's last complaint.
func (c *Cluster) Wait(what string, cond func() error) {
	c.t.Helper()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(c.deadline) {
			c.t.Fatalf("cluster test deadline passed waiting for %s: %v", what, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
