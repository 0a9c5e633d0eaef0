package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// serverReadyTimeout bounds how long StartServer waits for the listener.
// Recovering a large JetStream store happens before the listener opens, so
// this is generous.
const serverReadyTimeout = 30 * time.Second

// tlsTimeout bounds a client's TLS handshake; nats-server's default of
// half a second is tight for a loaded host.
const tlsTimeout = 2 * time.Second

// routeScheme is the URL scheme nats-server uses for cluster routes.
const routeScheme = "nats-route"

// ServerConfig configures the embedded NATS server.
//
// The zero value apart from Dir is a single node without authentication,
// listening on a free port of 127.0.0.1. Setting ClusterName makes the
// process one node of a JetStream cluster instead; every node then needs
// its own Name and Dir, and Routes to its peers.
type ServerConfig struct {
	Dir  string // JetStream file store directory (required)
	Host string // default "127.0.0.1"
	Port int    // 0 = pick a free port
	// NoSync turns off fsync on every write. Leave it false: with the
	// nats-server default (sync every 2 minutes) a crash loses writes that
	// were already acknowledged to the publisher, as Jepsen showed in 2025.
	NoSync bool

	// Name identifies the server; JetStream records stream and consumer
	// placement by it, so it must be unique in a cluster and stay the same
	// across restarts. Required when ClusterName is set.
	Name string

	// ClusterName turns on clustering: the node listens for routes on
	// ClusterHost:ClusterPort and connects to Routes. All nodes of one
	// cluster use the same name.
	ClusterName string
	ClusterHost string // default Host
	ClusterPort int    // 0 = pick a free port
	// Routes are the peers' cluster listeners as nats-route://host:port
	// URLs. Credentials do not belong here; see RouteUser. Listing this
	// node itself is harmless.
	Routes []string

	// RouteUser and RoutePassword are required of peers that connect to
	// this node's cluster listener, and presented to the peers this node
	// connects to, so every node of a cluster uses the same pair. They are
	// required when the cluster also authenticates clients: an open route
	// port would let anyone in as a peer.
	RouteUser     string
	RoutePassword string

	// Client authentication: either User and Password, or Token, or
	// neither (no authentication, for tests and single-host setups).
	// Password may be a bcrypt hash ("$2a$..."), so that the plain
	// password need not be stored with the server's configuration.
	User     string
	Password string
	Token    string

	// TLS for client connections: TLSCert and TLSKey are the server's
	// certificate and key (PEM files). With TLSCA set as well, clients
	// must present a certificate signed by one of its CAs. Routes between
	// cluster nodes do not use TLS.
	TLSCert string
	TLSKey  string
	TLSCA   string
}

// Clustered reports whether cfg describes a node of a cluster.
func (cfg ServerConfig) Clustered() bool { return cfg.ClusterName != "" }

// LogValue keeps secrets out of logs when a ServerConfig is logged.
func (cfg ServerConfig) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("dir", cfg.Dir),
		slog.String("listen", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))),
		slog.Bool("sync_always", !cfg.NoSync),
	}
	if cfg.Name != "" {
		attrs = append(attrs, slog.String("name", cfg.Name))
	}
	if cfg.Clustered() {
		attrs = append(attrs,
			slog.String("cluster", cfg.ClusterName),
			slog.String("cluster_listen", net.JoinHostPort(cfg.ClusterHost, strconv.Itoa(cfg.ClusterPort))),
			slog.Any("routes", cfg.Routes),
			slog.Bool("route_auth", cfg.RouteUser != ""))
	}
	auth := "none"
	switch {
	case cfg.User != "":
		auth = "user"
	case cfg.Token != "":
		auth = "token"
	}
	attrs = append(attrs, slog.String("client_auth", auth), slog.Bool("tls", cfg.TLSCert != ""),
		slog.Bool("client_certs", cfg.TLSCA != ""))
	return slog.GroupValue(attrs...)
}

// String is LogValue for fmt, so %v does not print secrets either.
func (cfg ServerConfig) String() string { return cfg.LogValue().String() }

// withDefaults checks cfg and fills in defaults. Errors name the field at
// fault and never contain a secret.
func (cfg ServerConfig) withDefaults() (ServerConfig, []*url.URL, error) {
	if cfg.Dir == "" {
		return cfg, nil, errors.New("ServerConfig.Dir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return cfg, nil, fmt.Errorf("ServerConfig.Port %d: out of range", cfg.Port)
	}
	switch {
	case (cfg.User == "") != (cfg.Password == ""):
		return cfg, nil, errors.New("ServerConfig.User and Password must be set together")
	case cfg.User != "" && cfg.Token != "":
		// nats-server would silently ignore the token.
		return cfg, nil, errors.New("ServerConfig: set either User and Password or Token, not both")
	case (cfg.RouteUser == "") != (cfg.RoutePassword == ""):
		return cfg, nil, errors.New("ServerConfig.RouteUser and RoutePassword must be set together")
	case (cfg.TLSCert == "") != (cfg.TLSKey == ""):
		return cfg, nil, errors.New("ServerConfig.TLSCert and TLSKey must be set together")
	case cfg.TLSCA != "" && cfg.TLSCert == "":
		return cfg, nil, errors.New("ServerConfig.TLSCA (client certificates) needs TLSCert and TLSKey")
	}
	if !cfg.Clustered() {
		if len(cfg.Routes) > 0 || cfg.ClusterPort != 0 || cfg.ClusterHost != "" || cfg.RouteUser != "" {
			return cfg, nil, errors.New("ServerConfig: Routes, ClusterHost, ClusterPort and RouteUser need ClusterName")
		}
		return cfg, nil, nil
	}

	if cfg.Name == "" {
		return cfg, nil, errors.New("ServerConfig.Name is required when ClusterName is set")
	}
	if strings.ContainsAny(cfg.Name, " \t\r\n") || strings.ContainsAny(cfg.ClusterName, " \t\r\n") {
		return cfg, nil, errors.New("ServerConfig: Name and ClusterName must not contain spaces")
	}
	if cfg.ClusterHost == "" {
		cfg.ClusterHost = cfg.Host
	}
	if cfg.ClusterPort < 0 || cfg.ClusterPort > 65535 {
		return cfg, nil, fmt.Errorf("ServerConfig.ClusterPort %d: out of range", cfg.ClusterPort)
	}
	if len(cfg.Routes) == 0 {
		// JetStream refuses to run clustered without configured routes.
		return cfg, nil, errors.New("ServerConfig.Routes: a clustered node needs at least one route")
	}
	if (cfg.User != "" || cfg.Token != "") && cfg.RouteUser == "" {
		return cfg, nil, errors.New("ServerConfig: clients must authenticate, so routes must too: set RouteUser and RoutePassword")
	}
	routes := make([]*url.URL, 0, len(cfg.Routes))
	for i, r := range cfg.Routes {
		u, err := parseRoute(r)
		if err != nil {
			return cfg, nil, fmt.Errorf("ServerConfig.Routes[%d]: %w", i, err)
		}
		if cfg.RouteUser != "" {
			// nats-server authenticates an explicit route with the
			// credentials in its URL only.
			u.User = url.UserPassword(cfg.RouteUser, cfg.RoutePassword)
		}
		routes = append(routes, u)
	}
	return cfg, routes, nil
}

// parseRoute parses a nats-route://host:port URL.
func parseRoute(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(s), urlErrCause(err))
	}
	switch {
	case u.Scheme != routeScheme:
		return nil, fmt.Errorf("%s: scheme must be %s://", redactURL(s), routeScheme)
	case u.User != nil:
		return nil, fmt.Errorf("%s: credentials belong in RouteUser and RoutePassword, not in the URL", redactURL(s))
	case u.Hostname() == "" || u.Port() == "":
		return nil, fmt.Errorf("%s: want %s://host:port", redactURL(s), routeScheme)
	}
	if err := checkPort(u.Port()); err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(s), err)
	}
	return u, nil
}

// Server is a NATS server with JetStream running inside this process.
type Server struct {
	ns       *server.Server
	cfg      ServerConfig
	stopOnce sync.Once
}

// StartServer starts an embedded NATS server with file-backed JetStream
// under cfg.Dir and returns once it accepts client connections. A
// clustered node may not serve JetStream requests yet at that point: that
// needs a quorum of its cluster (see JetStreamReady).
func StartServer(cfg ServerConfig, log *slog.Logger) (*Server, error) {
	cfg, routes, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	opts := &server.Options{
		ServerName:             cfg.Name,
		Host:                   cfg.Host,
		Port:                   anyPortIfZero(cfg.Port),
		JetStream:              true,
		StoreDir:               cfg.Dir,
		SyncAlways:             !cfg.NoSync,
		NoSigs:                 true, // the process owns signal handling
		DisableJetStreamBanner: true,
		Username:               cfg.User,
		Password:               cfg.Password,
		Authorization:          cfg.Token,
	}
	if cfg.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: cfg.TLSCert,
			KeyFile:  cfg.TLSKey,
			CaFile:   cfg.TLSCA,
			Verify:   cfg.TLSCA != "",
		})
		if err != nil {
			return nil, fmt.Errorf("start nats server: tls: %w", err)
		}
		opts.TLS = true
		opts.TLSConfig = tc
		opts.TLSVerify = cfg.TLSCA != ""
		opts.TLSTimeout = tlsTimeout.Seconds()
	}
	if cfg.Clustered() {
		opts.Cluster = server.ClusterOpts{
			Name:     cfg.ClusterName,
			Host:     cfg.ClusterHost,
			Port:     anyPortIfZero(cfg.ClusterPort),
			Username: cfg.RouteUser,
			Password: cfg.RoutePassword,
		}
		opts.Routes = routes
	}
	red := newRedactor(cfg.Password, cfg.Token, cfg.RoutePassword)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats server: %s", red.redact(err.Error()))
	}
	sl := &serverLogger{log: log.With("component", "nats-server"), red: red, fatal: make(chan string, 1)}
	ns.SetLoggerV2(sl, false, false, false)
	ns.Start()

	// Start reports failures (store dir unusable, port taken) only through
	// Fatalf, so watch for that instead of sitting out the whole timeout.
	deadline := time.Now().Add(serverReadyTimeout)
	for !ns.ReadyForConnections(100 * time.Millisecond) {
		var cause string
		select {
		case cause = <-sl.fatal:
		default:
			if time.Now().After(deadline) {
				cause = fmt.Sprintf("not ready for connections after %s", serverReadyTimeout)
			}
		}
		if cause != "" {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, fmt.Errorf("start nats server on %s: %s", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)), cause)
		}
	}
	addr, ok := ns.Addr().(*net.TCPAddr)
	if !ok {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("start nats server: unexpected listener address %v", ns.Addr())
	}
	cfg.Port = addr.Port
	if cfg.Clustered() {
		caddr := ns.ClusterAddr()
		if caddr == nil {
			ns.Shutdown()
			ns.WaitForShutdown()
			return nil, errors.New("start nats server: cluster listener did not open")
		}
		cfg.ClusterPort = caddr.Port
	}
	log.Debug("nats server started", "config", cfg)
	return &Server{ns: ns, cfg: cfg}, nil
}

// anyPortIfZero maps our "0 = pick a free port" to nats-server's way of
// saying it; to nats-server 0 means the default port.
func anyPortIfZero(port int) int {
	if port == 0 {
		return server.RANDOM_PORT
	}
	return port
}

// Config returns the configuration the server runs with, Port and
// ClusterPort being the ports actually bound, so passing it back to
// StartServer restarts the server on the same addresses and store.
func (s *Server) Config() ServerConfig { return s.cfg }

// ClientURL is the URL clients connect to; it stays the same across a
// restart with the same Port. It carries no credentials.
func (s *Server) ClientURL() string { return clientURL(s.cfg) }

// ClusterURL is the nats-route:// URL peers list in their Routes, or ""
// if the server is not clustered.
func (s *Server) ClusterURL() string {
	if !s.cfg.Clustered() {
		return ""
	}
	return routeScheme + "://" + net.JoinHostPort(s.cfg.ClusterHost, strconv.Itoa(s.cfg.ClusterPort))
}

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.cfg.Port }

// InProcessConn returns a client connection to the server through memory,
// for ClientConfig.InProcess.
func (s *Server) InProcessConn() (net.Conn, error) { return s.ns.InProcessConn() }

// Name is the server name; JetStream reports stream and consumer leaders
// by it. Without a configured Name nats-server makes one up.
func (s *Server) Name() string { return s.ns.Name() }

// JetStreamReady reports whether the server can serve JetStream requests:
// always for a single node, and for a clustered node once the cluster has
// elected a metadata leader and this node is up to date with it.
func (s *Server) JetStreamReady() bool { return s.ns.JetStreamIsCurrent() }

// Shutdown stops the server and waits until it has stopped. It is safe to
// call more than once.
func (s *Server) Shutdown() {
	s.stopOnce.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
	})
}

func clientURL(cfg ServerConfig) string {
	return "nats://" + net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
}

// serverLogger routes nats-server logging into slog. Notices are chatty
// startup and housekeeping lines, so they go to Debug. Every line passes
// through the redactor, so a secret nats-server happens to print (in a
// URL, a config dump) does not reach the log.
type serverLogger struct {
	log   *slog.Logger
	red   redactor
	fatal chan string
}

func (l *serverLogger) msg(format string, v []any) string {
	return l.red.redact(fmt.Sprintf(format, v...))
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(l.msg(format, v)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(l.msg(format, v)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(l.msg(format, v)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(l.msg(format, v)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(l.msg(format, v)) }

// Fatalf must not exit the process as the stock nats-server logger does:
// the server is embedded, so the failure is handed to StartServer instead.
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := l.msg(format, v)
	l.log.Error(msg, "fatal", true)
	select {
	case l.fatal <- msg:
	default:
	}
}

// Validate checks cfg as StartServer would, without starting or writing
// anything, so a role can refuse a bad configuration up front.
func (cfg ServerConfig) Validate() error {
	_, _, err := cfg.withDefaults()
	return err
}

// Stats is what a broker node tells of itself: its clients, the messages
// it moved since it started, and what its JetStream holds.
type Stats struct {
	Connections       int
	InMsgs, OutMsgs   int64 // since the node started
	InBytes, OutBytes int64
	Streams           int    // stream replicas on this node
	Consumers         int    // consumer replicas on this node
	Messages          uint64 // messages in this node's streams
	Bytes             uint64 // bytes in this node's streams
}

// Stats reads the node's figures; it asks nothing of the network.
func (s *Server) Stats() (Stats, error) {
	v, err := s.ns.Varz(nil)
	if err != nil {
		return Stats{}, fmt.Errorf("broker stats: %w", err)
	}
	st := Stats{Connections: v.Connections, InMsgs: v.InMsgs, OutMsgs: v.OutMsgs, InBytes: v.InBytes, OutBytes: v.OutBytes}
	js, err := s.ns.Jsz(nil)
	if err != nil {
		return Stats{}, fmt.Errorf("broker stats: jetstream: %w", err)
	}
	st.Streams, st.Consumers, st.Messages, st.Bytes = js.Streams, js.Consumers, js.Messages, js.Bytes
	return st, nil
}
