package web_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/web"
)

// problem reads rec as a problem+json answer and checks its status.
func problem(t testing.TB, rec *httptest.ResponseRecorder, wantStatus int) web.Problem {
	t.Helper()
	if rec.Code != wantStatus {
		t.Fatalf("status: got %d, want %d (body %s)", rec.Code, wantStatus, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type: got %q, want application/problem+json", ct)
	}
	var p web.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("body %q is not a problem: %v", rec.Body, err)
	}
	if p.Status != wantStatus || p.Title != http.StatusText(wantStatus) || p.Type != "about:blank" {
		t.Fatalf("problem: got %+v, want status %d, title %q, type about:blank", p, wantStatus, http.StatusText(wantStatus))
	}
	return p
}

func TestError(t *testing.T) {
	errA := errors.New("a happened")
	errB := errors.New("b happened")
	both := fmt.Errorf("%w and %w", errA, errB)
	aFirst := web.Statuses{{Err: errA, Status: http.StatusConflict}, {Err: errB, Status: http.StatusNotFound}}
	bFirst := web.Statuses{{Err: errB, Status: http.StatusNotFound}, {Err: errA, Status: http.StatusConflict}}

	cases := []struct {
		name       string
		statuses   web.Statuses
		err        error
		wantStatus int
		wantDetail string
		wantLogged bool
	}{
		{"sentinel", aFirst, fmt.Errorf("op: %w", errB), http.StatusNotFound, "op: b happened", false},
		{"two sentinels, first listed wins", aFirst, both, http.StatusConflict, "a happened and b happened", false},
		{"two sentinels, other order", bFirst, both, http.StatusNotFound, "a happened and b happened", false},
		{"StatusError before the table", aFirst,
			fmt.Errorf("decode: %w", &web.StatusError{Status: http.StatusTeapot, Err: errA}), http.StatusTeapot, "a happened", false},
		{"unknown error is a 500 that hides it", aFirst,
			errors.New("db: password=hunter2 at 10.0.0.1"), http.StatusInternalServerError, "internal error; see the service log", true},
		{"no table", nil, errA, http.StatusInternalServerError, "internal error; see the service log", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Many rounds: a map walked in random order would fail some.
			for range 50 {
				var logged bytes.Buffer
				log := slog.New(slog.NewTextHandler(&logged, nil))
				rec := httptest.NewRecorder()
				web.Error(rec, httptest.NewRequest("GET", "/x", nil), log, c.statuses, c.err)
				p := problem(t, rec, c.wantStatus)
				if p.Detail != c.wantDetail {
					t.Fatalf("detail: got %q, want %q", p.Detail, c.wantDetail)
				}
				if got := strings.Contains(logged.String(), c.err.Error()); got != c.wantLogged {
					t.Fatalf("logged the error: got %v, want %v (log %q)", got, c.wantLogged, logged.String())
				}
			}
		})
	}
}

func TestDecode(t *testing.T) {
	type dst struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	big := `{"name":"` + strings.Repeat("x", web.MaxBody) + `"}`
	cases := []struct {
		name        string
		contentType string
		body        string
		wantStatus  int // 0: no error
		wantErr     string
	}{
		{"valid", "application/json", `{"name":"a","count":2}`, 0, ""},
		{"charset parameter", "application/json; charset=utf-8", `{"name":"a"}`, 0, ""},
		{"+json media type", "application/merge-patch+json", `{"name":"a"}`, 0, ""},
		{"no content type", "", `{"name":"a"}`, http.StatusUnsupportedMediaType, "content type must be application/json"},
		{"wrong content type", "text/plain", `{"name":"a"}`, http.StatusUnsupportedMediaType, `"text/plain"`},
		{"unparsable content type", "application/json; =", `{"name":"a"}`, http.StatusUnsupportedMediaType, "is not application/json"},
		{"too large", "application/json", big, http.StatusRequestEntityTooLarge, "larger than"},
		{"too large after a valid object", "application/json", `{"name":"a"} ` + big, http.StatusRequestEntityTooLarge, "larger than"},
		{"unknown field", "application/json", `{"name":"a","colour":"red"}`, http.StatusBadRequest, `unknown field "colour"`},
		{"trailing object", "application/json", `{"name":"a"}{"name":"b"}`, http.StatusBadRequest, "single JSON object"},
		{"trailing garbage", "application/json", `{"name":"a"} x`, http.StatusBadRequest, "single JSON object"},
		{"malformed", "application/json", `{"name":`, http.StatusBadRequest, "malformed JSON"},
		{"syntax error", "application/json", `{"name" "a"}`, http.StatusBadRequest, "malformed JSON at byte"},
		{"wrong type", "application/json", `{"count":"two"}`, http.StatusBadRequest, `field "count" must be int`},
		{"empty", "application/json", ``, http.StatusBadRequest, "body is empty"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/x", strings.NewReader(c.body))
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			var d dst
			err := web.Decode(httptest.NewRecorder(), r, &d)
			if c.wantStatus == 0 {
				if err != nil || d.Name != "a" {
					t.Fatalf("Decode: got %v and %+v, want nil and name a", err, d)
				}
				return
			}
			var se *web.StatusError
			if !errors.As(err, &se) || se.Status != c.wantStatus || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Decode: got %v (%T), want a *StatusError %d mentioning %q", err, err, c.wantStatus, c.wantErr)
			}
			if strings.Contains(err.Error(), "\n") || len(err.Error()) > 200 {
				t.Fatalf("Decode error is not one short line: %q", err)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, map[string]string{"id": r.PathValue("id")})
	})
	mux.HandleFunc("DELETE /things/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /dir/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})
	h := web.Handler(mux)
	serve := func(method, target string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
		return rec
	}

	t.Run("route", func(t *testing.T) {
		rec := serve("GET", "/things/7")
		if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != `{"id":"7"}` {
			t.Fatalf("GET /things/7: got %d %q, want 200 {\"id\":\"7\"}", rec.Code, rec.Body)
		}
	})
	t.Run("unknown route", func(t *testing.T) {
		p := problem(t, serve("GET", "/nowhere"), http.StatusNotFound)
		if p.Detail != "no route for GET /nowhere" {
			t.Fatalf("detail: got %q, want %q", p.Detail, "no route for GET /nowhere")
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		rec := serve("POST", "/things/7")
		p := problem(t, rec, http.StatusMethodNotAllowed)
		if allow := rec.Header().Get("Allow"); allow != "DELETE, GET, HEAD" {
			t.Fatalf("Allow: got %q, want %q", allow, "DELETE, GET, HEAD")
		}
		if !strings.Contains(p.Detail, "POST") || !strings.Contains(p.Detail, "/things/7") {
			t.Fatalf("detail: got %q, want it to name POST and /things/7", p.Detail)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		rec := serve("GET", "/dir")
		// ServeMux's own redirect passes through (its code varies by Go version).
		if rec.Code/100 != 3 || rec.Header().Get("Location") != "/dir/" {
			t.Fatalf("GET /dir: got %d to %q, want a redirect to /dir/", rec.Code, rec.Header().Get("Location"))
		}
	})
}

func TestDecodeNamesMatchExactly(t *testing.T) {
	type item struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	type Meta struct {
		Note string `json:"note"`
	}
	type order struct {
		Meta                         // promoted: "note"
		CustomerID string            `json:"customer_id"`
		Items      []item            `json:"items"`
		Labels     map[string]string `json:"labels"`
		Extra      json.RawMessage   `json:"extra"`
		Ignored    string            `json:"-"`
		Untagged   int               // named by its Go name
		Backup     *item             `json:"backup,omitempty"`
		ByName     map[string][]item `json:"by_name"`
	}
	cases := []struct {
		name, body string
		wantErr    string // "": accepted
	}{
		{"exact", `{"customer_id":"c","items":[{"sku":"A-1","quantity":1}],"note":"n","Untagged":1,"backup":{"sku":"B","quantity":2}}`, ""},
		{"map keys are free", `{"labels":{"Any Key":"v","ſ":"w"},"by_name":{"X":[{"sku":"A","quantity":1}]}}`, ""},
		{"raw message is not walked", `{"extra":{"QUANTITY":1,"a":{"b":[1]}}}`, ""},
		{"upper-case nested key", `{"customer_id":"c-1","items":[{"sku":"A-1","QUANTITY":1}]}`,
			`unknown field "items[0].QUANTITY": field names are case-sensitive; did you mean "quantity"?`},
		{"title-case key", `{"customer_id":"c","items":[{"Sku":"A-1","quantity":1}]}`, `unknown field "items[0].Sku"`},
		{"title-case top-level key", `{"customer_id":"c","Items":[]}`, `unknown field "Items"`},
		{"long s look-alike", `{"customer_id":"c","items":[{"ſku":"A-1","quantity":1}]}`, `unknown field "items[0].ſku": field names are case-sensitive; did you mean "sku"?`},
		{"kelvin sign look-alike", `{"customer_id":"c","items":[],"note":"x","Untagged":1,"labels":{},"bac\u212aup":{}}`, `did you mean "backup"?`},
		{"wrong case of an untagged field", `{"untagged":1}`, `unknown field "untagged"`},
		{"a skipped field", `{"Ignored":"x"}`, `unknown field "Ignored"`},
		{"inside a pointer", `{"backup":{"SKU":"A"}}`, `unknown field "backup.SKU"`},
		{"inside a map of slices", `{"by_name":{"X":[{"sku":"A","Quantity":1}]}}`, `unknown field "by_name.X[0].Quantity"`},
		{"repeated key", `{"customer_id":"a","customer_id":"b"}`, `field "customer_id" appears twice`},
		{"repeated nested key", `{"items":[{"sku":"A","sku":"B"}]}`, `field "items[0].sku" appears twice`},
		{"wrong kind is a type error", `{"customer_id":{"X":1}}`, `field "customer_id" must be string`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/x", strings.NewReader(c.body))
			r.Header.Set("Content-Type", "application/json")
			var o order
			err := web.Decode(httptest.NewRecorder(), r, &o)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode(%s): %v, want nil", c.body, err)
				}
				return
			}
			var se *web.StatusError
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Decode(%s): got %v, want a 400 *StatusError containing %q", c.body, err, c.wantErr)
			}
		})
	}
}

func TestQuery(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /things", web.Query(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, r.URL.Query())
	}), "after", "limit"))
	mux.Handle("POST /things", web.Query(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	cases := []struct {
		method, target string
		wantStatus     int
		wantDetail     string
	}{
		{"GET", "/things", http.StatusOK, ""},
		{"GET", "/things?after=x&limit=2", http.StatusOK, ""},
		{"GET", "/things?after=", http.StatusOK, ""},
		{"GET", "/things?aftr=x", http.StatusBadRequest, `unknown query parameter "aftr": GET /things takes only after, limit`},
		{"GET", "/things?After=x", http.StatusBadRequest, `unknown query parameter "After"`},
		{"GET", "/things?limit=1&limit=2", http.StatusBadRequest, `query parameter "limit" is given 2 times`},
		{"GET", "/things?after=%zz", http.StatusBadRequest, "malformed query string"},
		{"GET", "/things?a;b", http.StatusBadRequest, "malformed query string"},
		{"POST", "/things", http.StatusNoContent, ""},
		{"POST", "/things?dry_run=1", http.StatusBadRequest, `unknown query parameter "dry_run": POST /things takes no query parameters`},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(c.method, c.target, nil))
		if c.wantDetail == "" {
			if rec.Code != c.wantStatus {
				t.Errorf("%s %s: status %d, want %d (body %s)", c.method, c.target, rec.Code, c.wantStatus, rec.Body)
			}
			continue
		}
		if p := problem(t, rec, c.wantStatus); !strings.Contains(p.Detail, c.wantDetail) {
			t.Errorf("%s %s: detail %q, want it to contain %q", c.method, c.target, p.Detail, c.wantDetail)
		}
	}
}
