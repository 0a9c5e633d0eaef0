package role

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/health"
	"github.com/convergehq/converge/internal/metrics"
	"github.com/convergehq/converge/internal/web"
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
	Sync          bool   // fsync every write (the default; off loses acknowledged writes on a crash)
	MetricsAddr   string // HTTP listen address of /metrics, /healthz and /readyz
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
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:8222", "HTTP listen address of the node's /metrics, /healthz and /readyz")
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
	if c.MetricsAddr == "" {
		return errors.New("broker: the metrics address is empty")
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
	http   *BrokerEndpoint
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
	log = log.With("role", "broker")
	srv, err := broker.StartServer(cfg.server(), log)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("broker: %w", err), lock.Release())
	}
	b := &Broker{srv: srv, lock: lock, failed: make(chan error, 1)}
	if b.http, err = StartBrokerEndpoint(cfg.MetricsAddr, func() *broker.Server { return srv }, b.failed, log); err != nil {
		srv.Shutdown()
		return nil, errors.Join(err, lock.Release())
	}
	return b, nil
}

// ClientURL is the URL clients connect to.
func (b *Broker) ClientURL() string { return b.srv.ClientURL() }

// MetricsURL is the base URL of the node's /metrics, /healthz and /readyz.
func (b *Broker) MetricsURL() string { return b.http.URL() }

// Failed reports the HTTP endpoint stopping by itself; the embedded server
// has no failure of its own to tell after it started.
func (b *Broker) Failed() <-chan error { return b.failed }

// Shutdown stops the node, then its HTTP endpoint, and lets its directory
// go.
func (b *Broker) Shutdown(ctx context.Context) error {
	b.srv.Shutdown()
	return errors.Join(b.http.Shutdown(ctx), b.lock.Release())
}

// BrokerEndpoint serves a broker node's /metrics, /healthz and /readyz. The
// node may come and go under it (converge dev's embedded broker, which
// fault tests stop and start): it reports what runs at each request.
type BrokerEndpoint struct {
	http *server
}

// StartBrokerEndpoint serves the endpoint on addr; node returns the running
// node, or nil while there is none. A server that stops by itself reports
// on failed.
func StartBrokerEndpoint(addr string, node func() *broker.Server, failed chan<- error, log *slog.Logger) (*BrokerEndpoint, error) {
	srv, err := listen(addr)
	if err != nil {
		return nil, fmt.Errorf("broker metrics: %w", err)
	}
	reg := metrics.New("broker")
	metrics.Broker(reg, node)
	mux := http.NewServeMux()
	health.Register(mux, func(context.Context) error {
		n := node()
		switch {
		case n == nil:
			return errors.New("the broker node is stopped")
		case !n.JetStreamReady():
			return errors.New("JetStream is not current with its cluster")
		}
		return nil
	})
	srv.serve(instrument(reg, web.Handler(mux), log), failed)
	return &BrokerEndpoint{http: srv}, nil
}

// URL is the endpoint's base URL.
func (e *BrokerEndpoint) URL() string { return "http://" + e.http.Addr() }

// Shutdown stops serving.
func (e *BrokerEndpoint) Shutdown(ctx context.Context) error { return e.http.shutdown(ctx) }
