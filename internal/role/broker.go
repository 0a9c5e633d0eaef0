package role

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/convergehq/converge/internal/broker"
)

// BrokerConfig configures `converge broker`: one NATS JetStream node,
// alone or one of a cluster.
type BrokerConfig struct {
	Data          string // JetStream file store
	Host          string
	Port          int
	Name          string // server name, unique in the cluster
	ClusterName   string // empty: a single node
	ClusterPort   int
	Routes        string // comma-separated nats-route://host:port of the peers
	User          string // clients must log in with this user and password
	Password      string
	RouteUser     string // the nodes log in to each other with these
	RoutePassword string
	Sync          bool // fsync every write (the default; off loses acknowledged writes on a crash)
}

// Register adds the role's flags to fs, with their defaults.
func (c *BrokerConfig) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.Data, "data", "./converge-data/broker", "JetStream store directory of this node")
	fs.StringVar(&c.Host, "host", "127.0.0.1", "client listen host")
	fs.IntVar(&c.Port, "port", 4222, "client listen port")
	fs.StringVar(&c.Name, "name", "", "server name, unique in the cluster (required with --cluster-name)")
	fs.StringVar(&c.ClusterName, "cluster-name", "", "cluster name; empty runs a single node")
	fs.IntVar(&c.ClusterPort, "cluster-port", 6222, "cluster (route) listen port")
	fs.StringVar(&c.Routes, "routes", "", "comma-separated nats-route://host:port URLs of the other nodes")
	fs.StringVar(&c.User, "user", "", "user clients must log in as (with --password)")
	fs.StringVar(&c.Password, "password", "", "password clients must give (never logged)")
	fs.StringVar(&c.RouteUser, "route-user", "", "user the nodes log in to each other as")
	fs.StringVar(&c.RoutePassword, "route-password", "", "password of the route user (never logged)")
	fs.BoolVar(&c.Sync, "sync", true, "fsync every write; false loses acknowledged writes on a crash")
}

func (c BrokerConfig) server() broker.ServerConfig {
	var routes []string
	for _, r := range strings.Split(c.Routes, ",") {
		if r = strings.TrimSpace(r); r != "" {
			routes = append(routes, r)
		}
	}
	sc := broker.ServerConfig{
		Dir: c.Data, Host: c.Host, Port: c.Port, NoSync: !c.Sync,
		Name: c.Name, ClusterName: c.ClusterName, Routes: routes,
		RouteUser: c.RouteUser, RoutePassword: c.RoutePassword,
		User: c.User, Password: c.Password,
	}
	if c.ClusterName != "" {
		sc.ClusterPort = c.ClusterPort
	}
	return sc
}

// Validate checks c before anything is written.
func (c BrokerConfig) Validate() error {
	if c.Data == "" {
		return errors.New("broker: the data directory is empty")
	}
	if c.Port < 0 || c.Port > 65535 || c.ClusterPort < 0 || c.ClusterPort > 65535 {
		return errors.New("broker: ports must be 0 to 65535")
	}
	if err := c.server().Validate(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	return nil
}

// Broker is a running broker node.
type Broker struct {
	srv    *broker.Server
	lock   *DataLock
	failed chan error
}

// StartBroker starts a broker node on its own, locked, data directory.
func StartBroker(_ context.Context, cfg BrokerConfig, log *slog.Logger) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lock, err := LockDataDir(cfg.Data)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	srv, err := broker.StartServer(cfg.server(), log.With("role", "broker"))
	if err != nil {
		return nil, errors.Join(fmt.Errorf("broker: %w", err), lock.Release())
	}
	return &Broker{srv: srv, lock: lock, failed: make(chan error)}, nil
}

// ClientURL is the URL clients connect to.
func (b *Broker) ClientURL() string { return b.srv.ClientURL() }

// Failed never reports: the embedded server has no failure of its own to
// tell after it started.
func (b *Broker) Failed() <-chan error { return b.failed }

// Shutdown stops the node and lets its directory go.
func (b *Broker) Shutdown(context.Context) error {
	b.srv.Shutdown()
	return b.lock.Release()
}
