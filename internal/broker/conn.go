package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// reconnectWait is short because the usual outage is the embedded
	// server restarting on the same port; we want to be back quickly.
	reconnectWait = 250 * time.Millisecond
	// closeTimeout bounds Close so shutdown cannot hang on a dead server.
	closeTimeout = 5 * time.Second
	// publishTimeout bounds how long a publish waits for its PubAcks.
	publishTimeout = 5 * time.Second
)

// Conn is a NATS connection with its JetStream context.
type Conn struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	log    *slog.Logger
	closed chan struct{} // closed by nats.go once the connection is closed

	streamsMu sync.Mutex
	streams   map[string]string // subject -> the stream that stores it, for PublishBatch
}

// Connect connects to url, a server URL or a comma-separated list of them,
// without credentials. It is Dial with only URLs and Name set.
func Connect(ctx context.Context, url, name string, log *slog.Logger) (*Conn, error) {
	urls, err := ParseURLs(url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return Dial(ctx, ClientConfig{URLs: urls, Name: name}, log)
}

// Dial connects to the servers in cfg. If none is reachable yet it still
// returns a Conn that keeps retrying in the background, so a service can
// start before (or without waiting for) its broker. A server that refuses
// the credentials is a configuration error, not an outage, so that is
// reported at once instead.
func Dial(ctx context.Context, cfg ClientConfig, log *slog.Logger) (*Conn, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	servers := cfg.redactedURLs()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", servers, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("nats_client", cfg.Name)

	// First try once without retrying, to tell a refusal (wrong
	// credentials, TLS mismatch) from servers that are merely down.
	nc, closed, err := dialOnce(cfg, log, false)
	if err != nil && !isRefusal(err) {
		log.Warn("nats servers not reachable yet, retrying in the background", "servers", servers, "err", err)
		nc, closed, err = dialOnce(cfg, log, true)
	}
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", servers, err)
	}
	// Without an async timeout a PubAck that never comes (lost while the
	// server restarts) would stay in nats.go's pending table for good and
	// eventually stall every publisher on this connection.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: jetstream: %w", servers, err)
	}
	return &Conn{nc: nc, js: js, log: log, closed: closed}, nil
}

// isRefusal reports connect errors that trying again will not fix.
func isRefusal(err error) bool {
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &certErr) ||
		errors.Is(err, nats.ErrAuthorization) ||
		errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrSecureConnRequired) ||
		errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.Is(err, nats.ErrClientCertOrRootCAsRequired)
}

// dialOnce makes one nats.Connect call; with retry it returns a connection
// that is still trying when no server answers.
func dialOnce(cfg ClientConfig, log *slog.Logger, retry bool) (*nats.Conn, chan struct{}, error) {
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.RetryOnFailedConnect(retry),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		// No reconnect buffer: a publish while disconnected fails at once
		// instead of waiting in the client, so a relay never has a later
		// event go out before an earlier one it will resend.
		nats.ReconnectBufSize(-1),
		nats.DrainTimeout(closeTimeout),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("nats connected", "url", redactURL(nc.ConnectedUrl()))
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", redactURL(nc.ConnectedUrl()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Warn("nats async error", "subject", sub.Subject, "err", err)
				return
			}
			log.Warn("nats async error", "err", err)
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Debug("nats connection closed")
			close(closed)
		}),
	}
	if cfg.InProcess != nil {
		opts = append(opts, nats.InProcessServer(cfg.InProcess))
	}
	switch {
	case cfg.User != "":
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	case cfg.Token != "":
		opts = append(opts, nats.Token(cfg.Token))
	case cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	nc, err := nats.Connect(strings.Join(cfg.URLs, ","), opts...)
	if err != nil {
		return nil, nil, err
	}
	return nc, closed, nil
}

// JetStream exposes the JetStream context for operations this package
// does not wrap.
func (c *Conn) JetStream() jetstream.JetStream { return c.js }

// Connected reports whether the connection is currently up (for /readyz).
func (c *Conn) Connected() bool { return c.nc.IsConnected() }

// Close drains the connection, so acks and publishes already handed to
// nats.go reach the server, and waits (bounded) until it is closed. Cancel
// any running Consume first; otherwise it returns an error once the
// connection is gone.
func (c *Conn) Close() {
	if err := c.nc.Drain(); err != nil {
		// Already closed, or reconnecting, where there is nothing to drain to.
		c.nc.Close()
	}
	select {
	case <-c.closed:
	case <-time.After(closeTimeout):
		c.log.Warn("nats drain did not finish, closing", "timeout", closeTimeout)
		c.nc.Close()
	}
}
