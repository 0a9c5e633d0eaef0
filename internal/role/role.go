// Package role is one process of converge: the order service, the
// inventory service, an API gateway, the load balancer or a broker node.
// Each role is a config struct (every field a flag with a CONVERGE_* twin)
// and a Start function that opens what the role needs, serves, and stops in
// the reverse order. `converge <role>` runs one in its own process; `converge
// dev` runs them all in one process, or starts the binary once per
// instance (the cluster topology). Both use the same functions.
package role

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"time"
)

// Running is a started role. Shutdown stops it; Failed reports a part that
// stopped by itself.
type Running interface {
	Shutdown(ctx context.Context) error
	Failed() <-chan error
}

// Wait runs r until ctx is done or a part of r fails, then shuts it down
// within grace. It returns the failure, if any.
func Wait(ctx context.Context, r Running, grace time.Duration) error {
	var failure error
	select {
	case <-ctx.Done():
	case failure = <-r.Failed():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	return errors.Join(failure, r.Shutdown(sctx))
}

// Labeled runs start with the goroutine label role=name (runtime/pprof):
// every goroutine the role starts, and every one those start (an HTTP
// server's connections, a relay, a consumer), carries it, so that a CPU
// profile of a process running several roles (converge dev, converge
// bench) tells their shares apart: go tool pprof -tags, or -tagfocus
// role=order. Work a role hands to another's goroutines is the other's: a
// publish is stored by the broker's. start runs in a goroutine of its own,
// so that the caller's labels stay as they were. The label costs nothing
// unless a profile is taken.
func Labeled[T any](ctx context.Context, name string, start func(context.Context) (T, error)) (T, error) {
	type result struct {
		r   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx := pprof.WithLabels(ctx, pprof.Labels("role", name))
		pprof.SetGoroutineLabels(ctx)
		r, err := start(ctx)
		done <- result{r, err}
	}()
	res := <-done
	return res.r, res.err
}

// server is an HTTP server bound before anything else of its role starts,
// so that a taken address fails the role before it writes anything.
type server struct {
	ln  net.Listener
	srv *http.Server
}

func listen(addr string) (*server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return &server{ln: ln}, nil
}

// Addr is the address the server is bound to (the port chosen for :0).
func (s *server) Addr() string { return s.ln.Addr().String() }

// serve starts answering with h; a server that stops with an error other
// than a shutdown reports it on failed.
func (s *server) serve(h http.Handler, failed chan<- error) {
	s.srv = &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case failed <- fmt.Errorf("serve %s: %w", s.ln.Addr(), err):
			default:
			}
		}
	}()
}

// shutdown stops the server gracefully, or closes the listener if it never
// served.
func (s *server) shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	if s.srv == nil {
		return s.ln.Close()
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		// Out of time: close what is still open, so no handler goes on
		// using what its role closes next.
		return errors.Join(err, s.srv.Close())
	}
	return nil
}

// kill closes the server at once, dropping its connections, as a crash
// would. Fault tests use it.
func (s *server) kill() error {
	if s.srv == nil {
		return s.ln.Close()
	}
	return s.srv.Close()
}

// defaultInstance names a process in logs, in the outbox lease and in the
// broker's client list: host and PID.
func defaultInstance(role string) string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("%s-%s-%d", role, host, os.Getpid())
}
