package system_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/inventory"
	"github.com/convergehq/converge/internal/order"
)

// specPath is api/openapi.json, relative to this package.
const specPath = "../../api/openapi.json"

// specMethods are the operation keys of an OpenAPI path item.
var specMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// probedMethods are the methods the reverse check expects a 405 for when the
// spec does not list them. HEAD is left out: ServeMux serves it on every
// GET route.
var probedMethods = []string{"GET", "PUT", "POST", "DELETE", "PATCH"}

// operation is one (method, path template) pair of the spec.
type operation struct {
	Method string // upper case
	Path   string // template, such as /api/v1/orders/{id}
}

func (o operation) String() string { return o.Method + " " + o.Path }

// loadSpec reads the spec as generic JSON.
func loadSpec(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatalf("read spec: %v", err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s is not valid JSON: %v", specPath, err)
	}
	v, _ := doc["openapi"].(string)
	if !strings.HasPrefix(v, "3.1") {
		t.Fatalf("openapi = %q, want 3.1.x", v)
	}
	return doc
}

// paths returns the spec's path items by template.
func paths(t *testing.T, doc map[string]any) map[string]map[string]any {
	t.Helper()
	raw, ok := doc["paths"].(map[string]any)
	if !ok || len(raw) == 0 {
		t.Fatalf("spec has no paths")
	}
	out := make(map[string]map[string]any, len(raw))
	for p, item := range raw {
		m, ok := item.(map[string]any)
		if !ok {
			t.Fatalf("path item %s is %T, want an object", p, item)
		}
		out[p] = m
	}
	return out
}

// operations returns every (method, path) pair of the spec, sorted.
func operations(t *testing.T, doc map[string]any) []operation {
	t.Helper()
	var ops []operation
	for p, item := range paths(t, doc) {
		for _, m := range specMethods {
			if _, ok := item[m]; ok {
				ops = append(ops, operation{Method: strings.ToUpper(m), Path: p})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	if len(ops) == 0 {
		t.Fatal("spec has no operations")
	}
	return ops
}

// fill substitutes the path parameters of a template with values that are
// well formed but name nothing that exists.
func fill(t *testing.T, template string) string {
	t.Helper()
	var b strings.Builder
	rest := template
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			return b.String()
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			t.Fatalf("path %s: unclosed {", template)
		}
		b.WriteString(rest[:i])
		switch name := rest[i+1 : i+j]; name {
		case "sku":
			b.WriteString("T-1")
		case "id":
			b.WriteString(randomUUID())
		case "seq":
			b.WriteString("999999")
		default:
			t.Fatalf("path %s: no test value for parameter {%s}; add one to fill", template, name)
		}
		rest = rest[i+j+1:]
	}
}

func randomUUID() string {
	var u [16]byte
	_, _ = rand.Read(u[:]) // never fails
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// asProblem decodes a problem+json response, failing the test if it is not
// one.
func asProblem(t *testing.T, what string, r response) problem {
	t.Helper()
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/problem+json" {
		t.Errorf("%s: Content-Type %q, want application/problem+json; body %s", what, r.Header.Get("Content-Type"), r.Body)
		return problem{}
	}
	var p problem
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Errorf("%s: decode problem %s: %v", what, r.Body, err)
		return problem{}
	}
	if p.Status != r.Status {
		t.Errorf("%s: problem status %d, want the response's %d", what, p.Status, r.Status)
	}
	return p
}

// noRoutePrefix starts the detail of web.NotFound: the answer to a path no
// router knows.
const noRoutePrefix = "no route for"

// TestOpenAPIMatchesRoutes checks the spec against the running system, both
// ways: every operation it lists is routed, and every method it does not
// list on one of its paths is refused with 405.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := loadSpec(t)
	ops := operations(t, doc)
	listed := map[string]map[string]bool{} // path -> method -> listed
	for _, op := range ops {
		if listed[op.Path] == nil {
			listed[op.Path] = map[string]bool{}
		}
		listed[op.Path][op.Method] = true
	}

	sys := start(t)
	c := newClient(t, sys)
	// The admin routes take the admin key; the others the API key.
	send := func(method, path string, body any) response {
		if strings.HasPrefix(path, "/api/v1/admin/") {
			return c.admin(method, path, body)
		}
		return c.do(method, path, body)
	}

	t.Run("listed operations are routed", func(t *testing.T) {
		for _, op := range ops {
			path := fill(t, op.Path)
			var body any
			if op.Method == http.MethodPut || op.Method == http.MethodPost {
				body = "{}"
			}
			r := send(op.Method, path, body)
			what := fmt.Sprintf("%s (as %s %s)", op, op.Method, path)
			t.Logf("%s: %d", what, r.Status)
			switch {
			case r.Status == http.StatusMethodNotAllowed:
				t.Errorf("%s: status 405 (Allow %q), want a routed answer: the spec lists an operation the system does not serve; body %s",
					what, r.Header.Get("Allow"), r.Body)
			case r.Status == http.StatusNotFound:
				if p := asProblem(t, what, r); strings.HasPrefix(p.Detail, noRoutePrefix) {
					t.Errorf("%s: 404 %q, want a routed answer: the spec lists a path the system does not serve", what, p.Detail)
				}
			case r.Status == http.StatusUnauthorized:
				t.Errorf("%s: status 401 with the API key, want a routed answer; body %s", what, r.Body)
			}
		}
	})

	// A misspelt parameter must not be ignored (?aftr= would be a silent
	// first page). The probes /healthz and /readyz, which the load balancer
	// answers itself, are left out.
	t.Run("query parameters are the spec's", func(t *testing.T) {
		items := paths(t, doc)
		for _, op := range ops {
			if !strings.HasPrefix(op.Path, "/api/") {
				continue
			}
			item := items[op.Path]
			opDoc, _ := item[strings.ToLower(op.Method)].(map[string]any)
			var names []string
			for _, p := range append(params(t, doc, item["parameters"]), params(t, doc, opDoc["parameters"])...) {
				if p["in"] == "query" {
					names = append(names, p["name"].(string))
				}
			}
			path := fill(t, op.Path)
			var body any
			if op.Method == http.MethodPut || op.Method == http.MethodPost {
				body = "{}"
			}
			var key []string
			if strings.HasPrefix(op.Path, "/api/v1/admin/") {
				key = []string{"Authorization", "Bearer " + testAdminKey}
			}
			for _, name := range append(names, "bogus") {
				r := c.do(op.Method, path+"?"+name+"=", body, key...)
				what := fmt.Sprintf("%s with ?%s=", op, name)
				unknown := r.Status == http.StatusBadRequest && strings.Contains(asProblem(t, what, r).Detail, "unknown query parameter")
				if want := name == "bogus"; unknown != want {
					t.Errorf("%s: status %d %s; want refused as unknown: %v", what, r.Status, r.Body, want)
				}
			}
		}
	})

	t.Run("unlisted methods are refused", func(t *testing.T) {
		templates := make([]string, 0, len(listed))
		for p := range listed {
			templates = append(templates, p)
		}
		sort.Strings(templates)
		for _, tmpl := range templates {
			want := make([]string, 0, len(listed[tmpl]))
			for m := range listed[tmpl] {
				want = append(want, m)
			}
			slices.Sort(want)
			path := fill(t, tmpl)
			for _, m := range probedMethods {
				if listed[tmpl][m] {
					continue
				}
				r := send(m, path, nil)
				what := fmt.Sprintf("%s %s (as %s)", m, tmpl, path)
				if r.Status != http.StatusMethodNotAllowed {
					t.Errorf("%s: status %d, want 405: the system serves a method the spec does not list; body %s", what, r.Status, r.Body)
					continue
				}
				asProblem(t, what, r)
				if got := allowed(r.Header.Get("Allow")); !slices.Equal(got, want) {
					t.Errorf("%s: Allow %q means %v (HEAD aside), want the spec's %v", what, r.Header.Get("Allow"), got, want)
				}
			}
		}
	})

	t.Run("paths outside the spec are not found", func(t *testing.T) {
		for _, path := range []string{"/api/v1/nope", "/api/v2/orders", "/nope", "/api/v1/orders/" + randomUUID() + "/nope"} {
			if _, ok := listed[path]; ok {
				t.Fatalf("%s is in the spec; pick another unknown path", path)
			}
			r := c.do(http.MethodGet, path, nil)
			what := "GET " + path
			if r.Status != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404; body %s", what, r.Status, r.Body)
				continue
			}
			if p := asProblem(t, what, r); !strings.HasPrefix(p.Detail, noRoutePrefix) {
				t.Errorf("%s: detail %q, want one starting %q", what, p.Detail, noRoutePrefix)
			}
		}
	})
}

// allowed parses an Allow header into sorted methods, HEAD left out.
func allowed(h string) []string {
	var out []string
	for _, m := range strings.Split(h, ",") {
		if m = strings.ToUpper(strings.TrimSpace(m)); m != "" && m != http.MethodHead {
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// TestOpenAPIIsCoherent is a cheap structural guard on the spec: every
// $ref resolves, every operation is named, summarised and answers something,
// every path parameter is declared, and every error is a Problem.
func TestOpenAPIIsCoherent(t *testing.T) {
	doc := loadSpec(t)

	// Every $ref points inside the document, at something that exists.
	walk(doc, "", func(at string, m map[string]any) {
		ref, ok := m["$ref"]
		if !ok {
			return
		}
		s, _ := ref.(string)
		if !strings.HasPrefix(s, "#/") {
			t.Errorf("%s: $ref %q, want a local reference #/...", at, ref)
			return
		}
		if _, err := pointer(doc, s[1:]); err != nil {
			t.Errorf("%s: $ref %q does not resolve: %v", at, s, err)
		}
	})

	if sec, _ := doc["security"].([]any); len(sec) == 0 {
		t.Errorf("global security is %v, want the bearer scheme", doc["security"])
	}

	ids := map[string]string{}
	for tmpl, item := range paths(t, doc) {
		inTemplate := templateParams(tmpl)
		pathLevel := params(t, doc, item["parameters"])
		for _, m := range specMethods {
			raw, ok := item[m]
			if !ok {
				continue
			}
			op, ok := raw.(map[string]any)
			what := strings.ToUpper(m) + " " + tmpl
			if !ok {
				t.Errorf("%s is %T, want an object", what, raw)
				continue
			}
			id, _ := op["operationId"].(string)
			switch prev, dup := ids[id]; {
			case id == "":
				t.Errorf("%s: no operationId", what)
			case dup:
				t.Errorf("%s: operationId %q is also used by %s", what, id, prev)
			default:
				ids[id] = what
			}
			if s, _ := op["summary"].(string); s == "" {
				t.Errorf("%s: no summary", what)
			}
			if tmpl == "/healthz" || tmpl == "/readyz" {
				if sec, ok := op["security"].([]any); !ok || len(sec) != 0 {
					t.Errorf("%s: security %v, want [] (health needs no key)", what, op["security"])
				}
			}

			// Path parameters: declared exactly for the template's names.
			declared := map[string]bool{}
			for _, p := range append(pathLevel, params(t, doc, op["parameters"])...) {
				if p["in"] != "path" {
					continue
				}
				name, _ := p["name"].(string)
				declared[name] = true
				if p["required"] != true {
					t.Errorf("%s: path parameter %q is not required: true", what, name)
				}
				if !slices.Contains(inTemplate, name) {
					t.Errorf("%s: declares path parameter %q, which the template does not have", what, name)
				}
			}
			for _, name := range inTemplate {
				if !declared[name] {
					t.Errorf("%s: template parameter {%s} is not declared", what, name)
				}
			}

			responses, _ := op["responses"].(map[string]any)
			if len(responses) == 0 {
				t.Errorf("%s: no responses", what)
			}
			for code, raw := range responses {
				resp := resolve(t, doc, raw)
				if resp == nil {
					continue // an unresolved $ref, reported above
				}
				if d, _ := resp["description"].(string); d == "" {
					t.Errorf("%s %s: response has no description", what, code)
				}
				if code < "400" {
					continue
				}
				content, _ := resp["content"].(map[string]any)
				pj, _ := content["application/problem+json"].(map[string]any)
				schema, _ := pj["schema"].(map[string]any)
				if schema["$ref"] != "#/components/schemas/Problem" || len(content) != 1 {
					t.Errorf("%s %s: content %v, want only application/problem+json with the Problem schema", what, code, content)
				}
			}
		}
	}
}

// TestOpenAPIMatchesDomain checks the limits and enums the spec states
// against the constants the code enforces.
func TestOpenAPIMatchesDomain(t *testing.T) {
	doc := loadSpec(t)
	statuses := []any{}
	for _, s := range []order.Status{order.Pending, order.Confirmed, order.Rejected, order.Cancelled} {
		statuses = append(statuses, string(s))
	}
	for _, tc := range []struct {
		ptr  string
		want any
	}{
		{"/components/parameters/Limit/schema/minimum", 1.0},
		{"/components/parameters/Limit/schema/maximum", float64(order.MaxLimit)},
		{"/components/parameters/Limit/schema/maximum", float64(inventory.MaxLimit)},
		{"/components/parameters/Limit/schema/default", float64(order.DefaultLimit)},
		{"/components/parameters/Limit/schema/default", float64(inventory.DefaultLimit)},
		{"/components/schemas/PlaceOrder/properties/items/maxItems", float64(order.MaxItems)},
		{"/components/schemas/OrderItem/properties/quantity/maximum", float64(order.MaxQuantity)},
		{"/components/schemas/SetStock/properties/on_hand/maximum", float64(inventory.MaxOnHand)},
		{"/components/schemas/OrderStatus/enum", statuses},
		{"/components/schemas/RejectionReason/enum", []any{"", events.ReasonInsufficientStock, events.ReasonUnknownSKU}},
		{"/components/schemas/Selection/properties/limit/maximum", float64(dlq.MaxLimit)},
		{"/components/schemas/Selection/properties/limit/default", float64(dlq.DefaultLimit)},
		{"/paths/~1api~1v1~1admin~1dead-letters/get/parameters/3/schema/maximum", float64(dlq.MaxLimit)},
		{"/paths/~1api~1v1~1admin~1dead-letters/get/parameters/3/schema/default", float64(dlq.DefaultLimit)},
	} {
		got, err := pointer(doc, tc.ptr)
		if err != nil {
			t.Errorf("%s: %v", tc.ptr, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s = %v, want %v", tc.ptr, got, tc.want)
		}
	}
	enum, _ := pointer(doc, "/components/schemas/OrderStatus/enum")
	for _, s := range enum.([]any) {
		if _, err := order.ParseStatus(s.(string)); err != nil {
			t.Errorf("OrderStatus %v: %v", s, err)
		}
	}
}

// walk calls fn on every object in v, with its JSON pointer.
func walk(v any, at string, fn func(at string, m map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		fn(at, x)
		for k, e := range x {
			walk(e, at+"/"+strings.NewReplacer("~", "~0", "/", "~1").Replace(k), fn)
		}
	case []any:
		for i, e := range x {
			walk(e, fmt.Sprintf("%s/%d", at, i), fn)
		}
	}
}

// pointer resolves an RFC 6901 JSON pointer in doc.
func pointer(doc any, ptr string) (any, error) {
	if ptr == "" {
		return doc, nil
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, fmt.Errorf("pointer %q does not start with /", ptr)
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		switch x := cur.(type) {
		case map[string]any:
			next, ok := x[tok]
			if !ok {
				return nil, fmt.Errorf("no %q in %s", tok, ptr)
			}
			cur = next
		case []any:
			var i int
			if _, err := fmt.Sscanf(tok, "%d", &i); err != nil || i < 0 || i >= len(x) {
				return nil, fmt.Errorf("no index %q in %s", tok, ptr)
			}
			cur = x[i]
		default:
			return nil, fmt.Errorf("%q of %s is inside a %T", tok, ptr, cur)
		}
	}
	return cur, nil
}

// resolve follows $refs (which TestOpenAPIIsCoherent checks separately) to
// the object they name.
func resolve(t *testing.T, doc map[string]any, v any) map[string]any {
	t.Helper()
	for range 10 {
		m, _ := v.(map[string]any)
		ref, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		next, err := pointer(doc, strings.TrimPrefix(ref, "#"))
		if err != nil {
			return nil
		}
		v = next
	}
	t.Errorf("$ref chain too long at %v", v)
	return nil
}

// params resolves a parameters list.
func params(t *testing.T, doc map[string]any, v any) []map[string]any {
	t.Helper()
	list, _ := v.([]any)
	out := make([]map[string]any, 0, len(list))
	for _, p := range list {
		if m := resolve(t, doc, p); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// templateParams returns the {names} of a path template.
func templateParams(tmpl string) []string {
	var names []string
	for _, seg := range strings.Split(tmpl, "/") {
		if strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") {
			names = append(names, seg[1:len(seg)-1])
		}
	}
	return names
}
