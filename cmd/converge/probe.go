package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// runProbe checks one endpoint once and fails unless it answers: an HTTP
// URL must answer 2xx to a GET, a tcp://host:port address must accept a
// connection. It is the health check of a container whose image has no
// shell or curl (distroless): `converge probe --url http://127.0.0.1:8081/readyz`.
func runProbe(ctx context.Context, args []string, getenv func(string) string, stdout, _ io.Writer) error {
	fs := newFlagSet("probe")
	target := fs.String("url", "", "http://host:port/path (must answer 2xx) or tcp://host:port (must accept a connection)")
	timeout := fs.Duration("timeout", 2*time.Second, "the longest the probe may take")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		return usageError{fmt.Sprintf("probe: --url %q: want http://host:port/path or tcp://host:port", *target)}
	}
	if *timeout <= 0 {
		return usageError{fmt.Sprintf("probe: --timeout must be positive, got %s", *timeout)}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	switch u.Scheme {
	case "tcp":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		return conn.Close()
	case "http", "https":
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("probe: %w", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return fmt.Errorf("probe: %s answered %s", u.Redacted(), resp.Status)
		}
		return nil
	}
	return usageError{fmt.Sprintf("probe: --url %q: want an http, https or tcp URL", *target)}
}
