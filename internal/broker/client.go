package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// ClientConfig says how a service reaches the broker.
type ClientConfig struct {
	// URLs of the servers, e.g. every node of the cluster; the client
	// picks one and fails over to the others. ParseURLs turns a
	// comma-separated list from a flag or environment variable into this.
	URLs []string
	Name string // client name, shown by the server's monitoring

	// At most one way to authenticate: User and Password, Token, or a
	// NATS credentials file (JWT and NKey seed, for operator mode).
	// Credentials in URLs also work but are better kept out of them.
	User      string
	Password  string
	Token     string
	CredsFile string

	// TLS: TLSCA is a PEM file of CAs to verify the server with (default:
	// the system roots); TLSCert and TLSKey are a client certificate for
	// servers that require one. Setting any of them requires TLS.
	TLSCA   string
	TLSCert string
	TLSKey  string

	// InProcess, when set, is a server in this process (the embedded
	// broker) that the client talks to through memory instead of TCP, on
	// every connect and reconnect; URLs then only name it. A provider that
	// fails (the server is down) is retried like a server that does not
	// answer.
	InProcess InProcessServer
}

// InProcessServer hands out in-memory connections to a NATS server running
// in this process. *Server is one.
type InProcessServer interface {
	InProcessConn() (net.Conn, error)
}

func (cfg ClientConfig) validate() error {
	if len(cfg.URLs) == 0 {
		return errors.New("ClientConfig.URLs: at least one URL is required")
	}
	for i, u := range cfg.URLs {
		if _, err := parseClientURL(u); err != nil {
			return fmt.Errorf("ClientConfig.URLs[%d]: %w", i, err)
		}
	}
	methods := 0
	for _, set := range []bool{cfg.User != "" || cfg.Password != "", cfg.Token != "", cfg.CredsFile != ""} {
		if set {
			methods++
		}
	}
	switch {
	case methods > 1:
		return errors.New("ClientConfig: set only one of User/Password, Token and CredsFile")
	case (cfg.User == "") != (cfg.Password == ""):
		return errors.New("ClientConfig.User and Password must be set together")
	case (cfg.TLSCert == "") != (cfg.TLSKey == ""):
		return errors.New("ClientConfig.TLSCert and TLSKey must be set together")
	}
	return nil
}

// LogValue keeps secrets out of logs when a ClientConfig is logged.
func (cfg ClientConfig) LogValue() slog.Value {
	urls := make([]string, len(cfg.URLs))
	for i, u := range cfg.URLs {
		urls[i] = redactURL(u)
	}
	auth := "none"
	switch {
	case cfg.User != "":
		auth = "user " + cfg.User
	case cfg.Token != "":
		auth = "token"
	case cfg.CredsFile != "":
		auth = "creds " + cfg.CredsFile
	}
	return slog.GroupValue(
		slog.Any("urls", urls),
		slog.String("name", cfg.Name),
		slog.String("auth", auth),
		slog.Bool("tls", cfg.TLSCA != "" || cfg.TLSCert != ""),
	)
}

// String is LogValue for fmt, so %v does not print secrets either.
func (cfg ClientConfig) String() string { return cfg.LogValue().String() }

// redactedURLs is the server list for error messages.
func (cfg ClientConfig) redactedURLs() string {
	urls := make([]string, len(cfg.URLs))
	for i, u := range cfg.URLs {
		urls[i] = redactURL(u)
	}
	return strings.Join(urls, ",")
}

// ParseURLs splits a comma-separated server list such as
// "nats://a:4222,nats://b:4222" and checks every entry. An entry without a
// scheme gets nats://, as nats.go would do. Errors never repeat
// credentials embedded in a URL.
func ParseURLs(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("parse nats URLs: empty list")
	}
	parts := strings.Split(s, ",")
	urls := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("parse nats URLs: entry %d of %d is empty", i+1, len(parts))
		}
		if !strings.Contains(p, "://") {
			p = "nats://" + p
		}
		u, err := parseClientURL(p)
		if err != nil {
			return nil, fmt.Errorf("parse nats URLs: entry %d: %w", i+1, err)
		}
		urls = append(urls, u.String())
	}
	return urls, nil
}

// parseClientURL checks one server URL as nats.go will use it.
func parseClientURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", redactURL(s), urlErrCause(err))
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return nil, fmt.Errorf("%s: scheme must be nats, tls, ws or wss", redactURL(s))
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%s: no host", redactURL(s))
	}
	if p := u.Port(); p != "" {
		if err := checkPort(p); err != nil {
			return nil, fmt.Errorf("%s: %w", redactURL(s), err)
		}
	}
	return u, nil
}

func checkPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1 to 65535", p)
	}
	return nil
}

// urlErrCause drops the URL that *url.Error repeats in full, credentials
// included, and keeps what was wrong with it.
func urlErrCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redactedUserinfo replaces the whole userinfo of a URL: with a token the
// secret is the user part, which url.URL.Redacted would leave in place.
const redactedUserinfo = "REDACTED"

// redactURL returns s with any userinfo replaced. It works on the raw
// string because it must also cope with URLs that do not parse.
func redactURL(s string) string {
	rest, scheme := s, ""
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, rest = s[:i+3], s[i+3:]
	}
	// The authority ends at the first '/', '?' or '#'; a password may
	// contain an unescaped '@', so the last '@' before that ends userinfo.
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	at := strings.LastIndex(rest[:end], "@")
	if at < 0 {
		return s
	}
	return scheme + redactedUserinfo + rest[at:]
}

// redactor replaces known secrets in text meant for logs and errors.
type redactor struct{ secrets []string }

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if s == "" {
			continue
		}
		// Also the forms a secret takes inside a URL.
		for _, v := range []string{s, url.PathEscape(s), url.QueryEscape(s), url.UserPassword("", s).String()[1:]} {
			if v != "" && !slices.Contains(r.secrets, v) {
				r.secrets = append(r.secrets, v)
			}
		}
	}
	return r
}

func (r redactor) redact(s string) string {
	for _, secret := range r.secrets {
		s = strings.ReplaceAll(s, secret, redactedUserinfo)
	}
	return s
}
