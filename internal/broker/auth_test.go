package broker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/broker/brokertest"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// checkNoSecret fails if text contains any of the secrets.
func checkNoSecret(t *testing.T, what, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(text, s) {
			t.Errorf("%s contains the secret %q: %s", what, s, text)
		}
	}
}

func TestUserPasswordAuth(t *testing.T) {
	const user, password, wrong = "orders", "right-horse-battery", "wrong-staple-guess"
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := broker.StartServer(broker.ServerConfig{Dir: t.TempDir(), User: user, Password: password}, log)
	if err != nil {
		t.Fatalf("StartServer: %v", err)
	}
	t.Cleanup(s.Shutdown)

	refused := []struct {
		name string
		cfg  broker.ClientConfig
	}{
		{"no credentials", broker.ClientConfig{URLs: []string{s.ClientURL()}}},
		{"wrong password", broker.ClientConfig{URLs: []string{s.ClientURL()}, User: user, Password: wrong}},
		{"wrong password in the URL", broker.ClientConfig{URLs: []string{strings.Replace(s.ClientURL(), "nats://", "nats://"+user+":"+wrong+"@", 1)}}},
		{"token instead", broker.ClientConfig{URLs: []string{s.ClientURL()}, Token: wrong}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = t.Name()
			c, err := broker.Dial(t.Context(), tc.cfg, log)
			if err == nil {
				c.Close()
				t.Fatal("Dial: got a connection, want it refused")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("Dial: got %v, want an authorization violation", err)
			}
			checkNoSecret(t, "Dial error", err.Error(), password, wrong)
			t.Logf("refused: %v", err)
		})
	}

	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: []string{s.ClientURL()}, Name: t.Name(), User: user, Password: password,
	}, log)
	if err != nil {
		t.Fatalf("Dial with the right credentials: %v", err)
	}
	t.Cleanup(c.Close)
	ensureStreams(t, c)
	if err := c.PublishBatch(t.Context(), msgs("created", 0, 3)); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
	if got := streamMsgs(t, c, eventsStream); got != 3 {
		t.Errorf("stream messages: got %d, want 3", got)
	}
	checkNoSecret(t, "the log", logs.String(), password, wrong)
}

func TestTokenAuth(t *testing.T) {
	const token, wrong = "s3cr3t-token-value", "not-the-token"
	s := brokertest.StartWith(t, broker.ServerConfig{Dir: t.TempDir(), Token: token})
	log := brokertest.Logger(t)

	_, err := broker.Dial(t.Context(), broker.ClientConfig{URLs: []string{s.ClientURL()}, Token: wrong}, log)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Dial with the wrong token: got %v, want an authorization violation", err)
	}
	checkNoSecret(t, "Dial error", err.Error(), token, wrong)

	// A token in the URL sits where a user name goes; it must be hidden
	// all the same.
	_, err = broker.Dial(t.Context(), broker.ClientConfig{URLs: []string{strings.Replace(s.ClientURL(), "nats://", "nats://"+wrong+"@", 1)}}, log)
	if err == nil {
		t.Fatal("Dial with the wrong token in the URL: got a connection, want it refused")
	}
	checkNoSecret(t, "Dial error", err.Error(), wrong)

	c, err := broker.Dial(t.Context(), broker.ClientConfig{URLs: []string{s.ClientURL()}, Token: token}, log)
	if err != nil {
		t.Fatalf("Dial with the token: %v", err)
	}
	t.Cleanup(c.Close)
	ensureStreams(t, c)
	if err := c.PublishBatch(t.Context(), msgs("created", 0, 1)); err != nil {
		t.Fatalf("PublishBatch: %v", err)
	}
}

// A server that is down is not a refusal: Dial returns a connection that
// connects once the server is up, as Connect always did.
func TestDialRetriesUntilServerIsUp(t *testing.T) {
	const user, password = "orders", "pw-for-retry"
	s := brokertest.StartWith(t, broker.ServerConfig{Dir: t.TempDir(), User: user, Password: password})
	cfg := s.Config()
	s.Shutdown()

	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: []string{s.ClientURL()}, Name: t.Name(), User: user, Password: password,
	}, brokertest.Logger(t))
	if err != nil {
		t.Fatalf("Dial while the server is down: %v", err)
	}
	t.Cleanup(c.Close)
	if c.Connected() {
		t.Fatal("Connected while the server is down: got true")
	}
	brokertest.StartWith(t, cfg)
	waitFor(t, "the connection to come up", c.Connected)
	ensureStreams(t, c)
}

func TestServerConfigValidation(t *testing.T) {
	const secret = "very-secret-pw"
	route := "nats-route://127.0.0.1:1"
	cluster := func(mod func(*broker.ServerConfig)) broker.ServerConfig {
		cfg := broker.ServerConfig{Name: "n1", ClusterName: "c", Routes: []string{route}}
		mod(&cfg)
		return cfg
	}
	for _, tc := range []struct {
		name string
		cfg  broker.ServerConfig
		want string
	}{
		{"user without password", broker.ServerConfig{User: "u"}, "User and Password"},
		{"password without user", broker.ServerConfig{Password: secret}, "User and Password"},
		{"user and token", broker.ServerConfig{User: "u", Password: secret, Token: secret + "t"}, "not both"},
		{"routes without cluster name", broker.ServerConfig{Routes: []string{route}}, "need ClusterName"},
		{"cluster without name", cluster(func(c *broker.ServerConfig) { c.Name = "" }), "Name is required"},
		{"cluster without routes", cluster(func(c *broker.ServerConfig) { c.Routes = nil }), "at least one route"},
		{"route with wrong scheme", cluster(func(c *broker.ServerConfig) { c.Routes = []string{"nats://127.0.0.1:1"} }), "nats-route://"},
		{"route without port", cluster(func(c *broker.ServerConfig) { c.Routes = []string{"nats-route://127.0.0.1"} }), "host:port"},
		{"route with credentials", cluster(func(c *broker.ServerConfig) {
			c.Routes = []string{"nats-route://r:" + secret + "@127.0.0.1:1"}
		}), "RouteUser"},
		{"unparsable route", cluster(func(c *broker.ServerConfig) {
			c.Routes = []string{"nats-route://r:" + secret + "@127.0.0.1:x"}
		}), "Routes[0]"},
		{"client auth without route auth", cluster(func(c *broker.ServerConfig) {
			c.User, c.Password = "u", secret
		}), "routes must too"},
		{"route user without password", cluster(func(c *broker.ServerConfig) { c.RouteUser = "r" }), "RouteUser and RoutePassword"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Dir = filepath.Join(t.TempDir(), "store")
			s, err := broker.StartServer(tc.cfg, brokertest.Logger(t))
			if err == nil {
				s.Shutdown()
				t.Fatalf("StartServer: got a server, want an error mentioning %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("StartServer: got %q, want it to mention %q", err, tc.want)
			}
			checkNoSecret(t, "StartServer error", err.Error(), secret)
			// Rejected before anything started: not even the store exists.
			if _, statErr := os.Stat(tc.cfg.Dir); !errors.Is(statErr, os.ErrNotExist) {
				t.Errorf("store directory after a rejected config: got %v, want it not created", statErr)
			}
		})
	}
	if got := (broker.ServerConfig{Dir: "d", Password: secret, RoutePassword: secret, Token: secret}).String(); strings.Contains(got, secret) {
		t.Errorf("ServerConfig.String: got %q, want no secret", got)
	}
}

func TestParseURLs(t *testing.T) {
	got, err := broker.ParseURLs(" nats://a:4222, tls://b:4223 ,c:4224")
	if err != nil {
		t.Fatalf("ParseURLs: %v", err)
	}
	want := []string{"nats://a:4222", "tls://b:4223", "nats://c:4224"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("ParseURLs: got %v, want %v", got, want)
	}
	const secret = "pa55-in-url"
	for _, tc := range []struct{ in, want string }{
		{"", "empty list"},
		{"nats://a:4222,,nats://b:4222", "entry 2 of 3 is empty"},
		{"http://a:4222", "scheme must be"},
		{"nats://:4222", "no host"},
		{"nats://a:99999", "want 1 to 65535"},
		{"nats://u:" + secret + "@a:port", "invalid port"},
		{"nats://u:" + secret + "@a:0", "want 1 to 65535"},
		{"nats://u:" + secret + "@%zz:4222", "entry 1"},
	} {
		_, err := broker.ParseURLs(tc.in)
		if err == nil {
			t.Errorf("ParseURLs(%q): got nil error, want one mentioning %q", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseURLs(%q): got %q, want it to mention %q", tc.in, err, tc.want)
		}
		checkNoSecret(t, "ParseURLs error", err.Error(), secret)
	}
	// Credentials in a valid URL are kept for connecting, but not shown.
	cfg := broker.ClientConfig{URLs: []string{"nats://u:" + secret + "@a:4222"}, Password: secret}
	checkNoSecret(t, "ClientConfig.String", cfg.String(), secret)
}

func TestTLSWithClientCertificates(t *testing.T) {
	files := brokertest.GenerateTLS(t)
	s := brokertest.StartWith(t, broker.ServerConfig{
		Dir: t.TempDir(), TLSCert: files.ServerCert, TLSKey: files.ServerKey, TLSCA: files.CA,
	})
	log := brokertest.Logger(t)
	urls := []string{s.ClientURL()}

	for _, tc := range []struct {
		name          string
		cfg           broker.ClientConfig
		refusedAtOnce bool
	}{
		{"server not trusted", broker.ClientConfig{URLs: urls, TLSCert: files.ClientCert, TLSKey: files.ClientKey}, true},
		{"no client certificate", broker.ClientConfig{URLs: urls, TLSCA: files.CA}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Dial refuses a server certificate it cannot verify at once;
			// a handshake the server rejects looks like an unreachable
			// server, so Dial keeps trying and never connects.
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			c, err := broker.Dial(ctx, tc.cfg, log)
			if err != nil {
				t.Logf("refused: %v", err)
				return
			}
			defer c.Close()
			if tc.refusedAtOnce {
				t.Fatal("Dial to a server whose certificate does not verify: got a connection, want an error")
			}
			if err := c.EnsureStream(ctx, broker.StreamConfig{Name: eventsStream, Subjects: []string{"orders.>"}}); err == nil {
				t.Fatal("EnsureStream without a valid TLS setup: got nil, want an error")
			}
			if c.Connected() {
				t.Error("Connected without a valid TLS setup: got true")
			}
		})
	}

	c, err := broker.Dial(t.Context(), broker.ClientConfig{
		URLs: []string{strings.Replace(s.ClientURL(), "nats://", "tls://", 1)}, Name: t.Name(),
		TLSCA: files.CA, TLSCert: files.ClientCert, TLSKey: files.ClientKey,
	}, log)
	if err != nil {
		t.Fatalf("Dial with TLS: %v", err)
	}
	t.Cleanup(c.Close)
	ensureStreams(t, c)
	if err := c.PublishBatch(t.Context(), msgs("created", 0, 2)); err != nil {
		t.Fatalf("PublishBatch over TLS: %v", err)
	}
}
