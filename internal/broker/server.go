package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// serverReadyTimeout bounds how long StartServer waits for the listener.
// Recovering a large JetStream store happens before the listener opens, so
// this is generous.
const serverReadyTimeout = 30 * time.Second

// ServerConfig configures the embedded NATS server.
type ServerConfig struct {
	Dir  string // JetStream file store directory (required)
	Host string // default "127.0.0.1"
	Port int    // 0 = pick a free port
	// NoSync turns off fsync on every write. Leave it false: with the
	// nats-server default (sync every 2 minutes) a crash loses writes that
	// were already acknowledged to the publisher, as Jepsen showed in 2025.
	NoSync bool
}

// Server is a NATS server with JetStream running inside this process.
type Server struct {
	ns       *server.Server
	cfg      ServerConfig
	stopOnce sync.Once
}

// StartServer starts an embedded NATS server with file-backed JetStream
// under cfg.Dir and returns once it accepts client connections.
func StartServer(cfg ServerConfig, log *slog.Logger) (*Server, error) {
	if cfg.Dir == "" {
		return nil, errors.New("start nats server: ServerConfig.Dir is required")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	port := cfg.Port
	if port == 0 {
		// nats-server treats 0 as "the default port 4222".
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		Host:                   cfg.Host,
		Port:                   port,
		JetStream:              true,
		StoreDir:               cfg.Dir,
		SyncAlways:             !cfg.NoSync,
		NoSigs:                 true, // the process owns signal handling
		DisableJetStreamBanner: true,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	sl := &serverLogger{log: log.With("component", "nats-server"), fatal: make(chan string, 1)}
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
	log.Debug("nats server started", "url", clientURL(cfg), "dir", cfg.Dir, "sync_always", !cfg.NoSync)
	return &Server{ns: ns, cfg: cfg}, nil
}

// Config returns the configuration the server runs with, Port being the
// port actually bound, so passing it back to StartServer restarts the
// server on the same address and store.
func (s *Server) Config() ServerConfig { return s.cfg }

// ClientURL is the URL clients connect to; it stays the same across a
// restart with the same Port.
func (s *Server) ClientURL() string { return clientURL(s.cfg) }

// Port is the TCP port the server listens on.
func (s *Server) Port() int { return s.cfg.Port }

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
// startup and housekeeping lines, so they go to Debug.
type serverLogger struct {
	log   *slog.Logger
	fatal chan string
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

// Fatalf must not exit the process as the stock nats-server logger does:
// the server is embedded, so the failure is handed to StartServer instead.
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)
	select {
	case l.fatal <- msg:
	default:
	}
}
