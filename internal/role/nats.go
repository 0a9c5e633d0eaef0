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

// NATS says how a role reaches the broker.
type NATS struct {
	URLs     string // comma-separated nats:// URLs of the cluster's nodes
	User     string
	Password string
	Token    string
	Creds    string // a NATS credentials file
	CA       string // TLS: the CA that signed the servers' certificates
	Cert     string // TLS: this client's certificate and key
	Key      string
}

// register adds the --nats* flags to fs.
func (n *NATS) register(fs *flag.FlagSet, def string) {
	n.URLs = def
	fs.StringVar(&n.URLs, "nats", def, "comma-separated NATS URLs of the broker (nats://host:4222,...)")
	fs.StringVar(&n.User, "nats-user", "", "NATS user name")
	fs.StringVar(&n.Password, "nats-password", "", "NATS password (never logged)")
	fs.StringVar(&n.Token, "nats-token", "", "NATS token (never logged)")
	fs.StringVar(&n.Creds, "nats-creds", "", "NATS credentials file")
	fs.StringVar(&n.CA, "nats-ca", "", "TLS: CA certificate file of the NATS servers")
	fs.StringVar(&n.Cert, "nats-cert", "", "TLS: client certificate file")
	fs.StringVar(&n.Key, "nats-key", "", "TLS: client key file")
}

// Validate checks the URLs and that the TLS files come in a usable set.
func (n NATS) Validate() error {
	if _, err := n.urls(); err != nil {
		return err
	}
	if (n.Cert == "") != (n.Key == "") {
		return errors.New("nats: --nats-cert and --nats-key go together")
	}
	if n.Token != "" && (n.User != "" || n.Password != "") {
		return errors.New("nats: give a token or a user and password, not both")
	}
	return nil
}

func (n NATS) urls() ([]string, error) {
	var out []string
	for _, u := range strings.Split(n.URLs, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return nil, fmt.Errorf("nats: %q is not a nats:// or tls:// URL", redactURL(u))
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, errors.New("nats: no broker URL given (--nats)")
	}
	return out, nil
}

// connect dials the broker as client name.
func (n NATS) connect(ctx context.Context, name string, log *slog.Logger) (*broker.Conn, error) {
	urls, err := n.urls()
	if err != nil {
		return nil, err
	}
	return broker.Connect(ctx, strings.Join(urls, ","), name, log)
}

// redactURL hides a password in a URL such as nats://user:pass@host.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || scheme > at {
		return u
	}
	user, _, _ := strings.Cut(u[scheme+3:at], ":")
	return u[:scheme+3] + user + ":…" + u[at:]
}
