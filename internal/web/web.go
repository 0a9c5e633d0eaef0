// Package web holds what every HTTP handler of converge shares: JSON decoding
// with limits, RFC 9457 problem+json responses, and the one place where an
// error becomes a status code.
package web

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// MaxBody is the largest request body any endpoint accepts.
const MaxBody = 1 << 20

// Problem is an RFC 9457 problem detail.
type Problem struct {
	Type     string `json:"type"`
	Title    string `json:"title"`
	Status   int    `json:"status"`
	Detail   string `json:"detail,omitempty"`
	Instance string `json:"instance,omitempty"`
}

// WriteProblem answers with an application/problem+json body.
func WriteProblem(w http.ResponseWriter, status int, detail string) {
	p := Problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p) // the client has gone if this fails; nothing left to tell it
}

// WriteJSON answers with a JSON body.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client has gone if this fails; nothing left to tell it
}

// StatusError carries the status a request error should be answered with.
// Decode returns it; handlers rarely build one themselves.
type StatusError struct {
	Status int
	Err    error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// Decode reads one JSON object from the request body into dst. It refuses a
// content type other than JSON (415), a body over MaxBody (413), malformed
// JSON, trailing data, and any object key that is not exactly the JSON name
// of a field of dst or appears twice (400): encoding/json alone would take
// "QUANTITY" or "ſku" for "quantity" or "sku".
func Decode(w http.ResponseWriter, r *http.Request, dst any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return &StatusError{http.StatusUnsupportedMediaType, fmt.Errorf("content type %q is not application/json", ct)}
		}
	} else {
		return &StatusError{http.StatusUnsupportedMediaType, errors.New("content type must be application/json")}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &StatusError{http.StatusRequestEntityTooLarge, fmt.Errorf("body is larger than %d bytes", MaxBody)}
		}
		return &StatusError{http.StatusBadRequest, fmt.Errorf("reading the body: %w", err)}
	}
	return decodeBytes(body, dst)
}

// decodeBytes is Decode of a body already read: it refuses malformed JSON,
// trailing data and inexact or repeated keys with a 400 *StatusError.
func decodeBytes(body []byte, dst any) error {
	if json.Valid(body) {
		// Valid JSON may still be the wrong shape; decoding below says so.
		if err := checkKeys(body, reflect.TypeOf(dst)); err != nil {
			return &StatusError{http.StatusBadRequest, err}
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntax *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.Is(err, io.EOF):
			return &StatusError{http.StatusBadRequest, errors.New("body is empty")}
		case errors.As(err, &syntax):
			return &StatusError{http.StatusBadRequest, fmt.Errorf("malformed JSON at byte %d", syntax.Offset)}
		case errors.As(err, &typ):
			return &StatusError{http.StatusBadRequest, fmt.Errorf("field %q must be %s", typ.Field, typ.Type)}
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return &StatusError{http.StatusBadRequest, fmt.Errorf("unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))}
		default:
			return &StatusError{http.StatusBadRequest, fmt.Errorf("malformed JSON: %w", err)}
		}
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		return &StatusError{http.StatusBadRequest, errors.New("body must hold a single JSON object")}
	}
	return nil
}

// ErrorStatus pairs a sentinel error with the status it is answered with.
type ErrorStatus struct {
	Err    error
	Status int
}

// Statuses maps a service's sentinel errors to the status they are answered
// with. Each service declares its own. Error walks it in order and the first
// entry that errors.Is matches wins, so an error that wraps two sentinels
// always gets the same status: list the more specific sentinel first.
type Statuses []ErrorStatus

// Error answers err as problem+json. A *StatusError or an error in statuses
// gets its status and its message; anything else is a 500 whose detail says
// nothing of the internals, and is logged.
func Error(w http.ResponseWriter, r *http.Request, log *slog.Logger, statuses Statuses, err error) {
	var se *StatusError
	if errors.As(err, &se) {
		WriteProblem(w, se.Status, se.Error())
		return
	}
	for _, s := range statuses {
		if errors.Is(err, s.Err) {
			WriteProblem(w, s.Status, err.Error())
			return
		}
	}
	log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	WriteProblem(w, http.StatusInternalServerError, "internal error; see the service log")
}

// NotFound answers unknown routes with problem+json.
func NotFound(w http.ResponseWriter, r *http.Request) {
	WriteProblem(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
}

// QueryLimit reads the limit query parameter: 0 when absent (the caller's
// default applies), a 400 *StatusError when it is not a whole number from 1
// to max.
func QueryLimit(r *http.Request, max int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, &StatusError{http.StatusBadRequest, fmt.Errorf("limit must be a whole number from 1 to %d", max)}
	}
	return n, nil
}

// Query serves next only when the request's query string is well formed and
// names no parameter other than params, none of them twice; otherwise it
// answers 400 naming the parameter, so that a misspelt one (?aftr=) is
// refused rather than ignored. A route without parameters passes none.
func Query(next http.Handler, params ...string) http.Handler {
	takes := "takes no query parameters"
	if len(params) > 0 {
		takes = "takes only " + strings.Join(params, ", ")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			WriteProblem(w, http.StatusBadRequest, "malformed query string: "+err.Error())
			return
		}
		for _, name := range slices.Sorted(maps.Keys(q)) {
			switch {
			case !slices.Contains(params, name):
				route := r.Pattern // set by ServeMux
				if route == "" {
					route = "this route"
				}
				WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q: %s %s", name, route, takes))
				return
			case len(q[name]) > 1:
				WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q is given %d times; give it once", name, len(q[name])))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
