package lb

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/convergehq/converge/internal/web"
)

type attemptKey struct{}

// attempt follows one proxied request across the backends it is sent to.
// ServeHTTP, Rewrite and RoundTrip all run on the request's goroutine, so
// it needs no lock.
type attempt struct {
	cur   int    // backend serving the request now
	tried []bool // backends already sent this request
	// in and url are the inbound request and the outbound URL before a
	// backend was chosen for it, kept by Rewrite for retarget.
	in  *http.Request
	url *url.URL
	// body is the whole request body when it was small enough to keep.
	// The Transport closes the body it is given when a dial fails, so
	// only a kept body can be sent again.
	body []byte
	// oneShot is set when the body was too large to keep.
	oneShot bool
}

// keepBody reads a body of up to web.MaxBody bytes into memory, so the
// request can be resent, and puts it back on r. A larger body is streamed
// on unchanged and the request is not retried. The framing (ContentLength,
// TransferEncoding, trailers) is left as the client sent it.
func (at *attempt) keepBody(r *http.Request) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	if r.ContentLength > web.MaxBody {
		at.oneShot = true
		return nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, web.MaxBody+1))
	if err != nil {
		return err
	}
	if len(buf) > web.MaxBody {
		at.oneShot = true
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return nil
	}
	at.body = buf
	r.Body = io.NopCloser(bytes.NewReader(buf))
	// Lets the Transport itself resend on a pooled connection that the
	// instance closed before reading anything.
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return nil
}

// retrier resends a request to another healthy backend when the connection
// to the chosen one could not be made. Only a failed dial is retried: the
// request never left, so sending it elsewhere cannot apply it twice. Any
// later error may come after the instance acted on the request, and is
// returned as is.
type retrier struct {
	p    *Pool
	next http.RoundTripper
}

func (t *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	at, ok := req.Context().Value(attemptKey{}).(*attempt)
	if !ok {
		return t.next.RoundTrip(req)
	}
	for {
		resp, err := t.next.RoundTrip(req)
		if err == nil || !isDialError(err) || req.Context().Err() != nil {
			// A dial cut short because the client left says nothing
			// of the instance either.
			return resp, err
		}
		t.p.markDown(at.cur, err)
		if at.oneShot {
			return nil, err
		}
		// Every retry marks one more backend tried, so there are at most
		// len(backends) attempts.
		i := t.p.policy.acquire(t.p.backends, at.tried)
		if i < 0 {
			return nil, err
		}
		t.p.backends[at.cur].inflight.Add(-1)
		at.cur, at.tried[i] = i, true
		req = at.retarget(req, t.p.backends[i].url)
	}
}

// retarget returns a copy of prev aimed at target, as Rewrite would have
// aimed it, with a fresh copy of the kept body.
func (at *attempt) retarget(prev *http.Request, target *url.URL) *http.Request {
	out := prev.Clone(prev.Context())
	u := *at.url
	out.URL = &u
	pr := httputil.ProxyRequest{In: at.in, Out: out}
	pr.SetURL(target)
	if prev.Body != nil && at.body != nil {
		out.Body = io.NopCloser(bytes.NewReader(at.body))
	}
	return out
}

// isDialError reports whether err is a failure to connect, after which the
// request has certainly not been sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
