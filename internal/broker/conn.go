package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
}

// Connect connects to url. If the server is not reachable yet it still
// returns a Conn that keeps retrying in the background, so a service can
// start before (or without waiting for) its broker.
func Connect(ctx context.Context, url, name string, log *slog.Logger) (*Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("nats_client", name)
	closed := make(chan struct{})
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		// No reconnect buffer: a publish while disconnected fails at once
		// instead of waiting in the client, so a relay never has a later
		// event go out before an earlier one it will resend.
		nats.ReconnectBufSize(-1),
		nats.DrainTimeout(closeTimeout),
		nats.ConnectHandler(func(*nats.Conn) {
			log.Info("nats connected", "url", url)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
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
	)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	// Without an async timeout a PubAck that never comes (lost while the
	// server restarts) would stay in nats.go's pending table for good and
	// eventually stall every publisher on this connection.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("connect %s: jetstream: %w", url, err)
	}
	return &Conn{nc: nc, js: js, log: log, closed: closed}, nil
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

// StreamConfig describes a stream for EnsureStream.
type StreamConfig struct {
	Name       string
	Subjects   []string
	Replicas   int           // 0 => 1
	Duplicates time.Duration // de-duplication window for Nats-Msg-Id; 0 => 2m
}

// EnsureStream creates the stream, or updates it to cfg if it exists.
// Streams are file-backed with limits retention, so consumers of several
// services can read the same events independently.
func (c *Conn) EnsureStream(ctx context.Context, cfg StreamConfig) error {
	if cfg.Name == "" {
		return errors.New("ensure stream: name is required")
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	_, err := c.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:       cfg.Name,
		Subjects:   cfg.Subjects,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Replicas:   cfg.Replicas,
		Duplicates: cfg.Duplicates,
	})
	if err != nil {
		return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
	}
	return nil
}
