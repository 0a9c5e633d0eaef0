package role

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"

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

	// InProcess, set by converge dev for its embedded broker (never by a
	// flag), connects through memory instead of TCP; URLs then only name
	// the broker.
	InProcess broker.InProcessServer
}

// Register adds the --nats* flags to fs, for a broker on this machine.
func (n *NATS) Register(fs *flag.FlagSet) { n.register(fs, "nats://127.0.0.1:4222") }

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
	if _, err := broker.ParseURLs(n.URLs); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if (n.Cert == "") != (n.Key == "") {
		return errors.New("nats: --nats-cert and --nats-key go together")
	}
	if n.Token != "" && (n.User != "" || n.Password != "") {
		return errors.New("nats: give a token or a user and password, not both")
	}
	return nil
}

// connect dials the broker as client name.
func (n NATS) connect(ctx context.Context, name string, log *slog.Logger) (*broker.Conn, error) {
	urls, err := broker.ParseURLs(n.URLs)
	if err != nil {
		return nil, fmt.Errorf("nats: %w", err)
	}
	return broker.Dial(ctx, broker.ClientConfig{
		URLs: urls, Name: name,
		User: n.User, Password: n.Password, Token: n.Token, CredsFile: n.Creds,
		TLSCA: n.CA, TLSCert: n.Cert, TLSKey: n.Key,
		InProcess: n.InProcess,
	}, log)
}
