package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/convergehq/converge/internal/events"
)

var testTime = time.Date(2025, 1, 2, 3, 4, 5, 6000, time.FixedZone("X", 3600))

func mustNew(t testing.TB, typ events.Type, subject string, data any) events.Envelope {
	t.Helper()
	e, err := events.New("converge/test", typ, subject, data, testTime)
	if err != nil {
		t.Fatalf("events.New(%s): %v", typ, err)
	}
	return e
}

func TestNewDecodeRoundTrip(t *testing.T) {
	cases := []struct {
		typ     events.Type
		subject string
		data    any
		decode  func(events.Envelope) (any, error)
	}{
		{
			events.OrderCreated, "orders.created",
			&events.OrderCreatedData{OrderID: "o1", CustomerID: "c1", Items: []events.Item{{SKU: "A", Quantity: 2}, {SKU: "B", Quantity: 1}}},
			func(e events.Envelope) (any, error) { var d events.OrderCreatedData; return &d, e.DecodeData(&d) },
		},
		{
			events.OrderCancelled, "orders.cancelled",
			&events.OrderCancelledData{OrderID: "o1"},
			func(e events.Envelope) (any, error) { var d events.OrderCancelledData; return &d, e.DecodeData(&d) },
		},
		{
			events.StockReserved, "inventory.reserved",
			&events.StockReservedData{OrderID: "o1", Items: []events.Item{{SKU: "A", Quantity: 2}}},
			func(e events.Envelope) (any, error) { var d events.StockReservedData; return &d, e.DecodeData(&d) },
		},
		{
			events.StockRejected, "inventory.rejected",
			&events.StockRejectedData{OrderID: "o1", Reason: events.ReasonUnknownSKU},
			func(e events.Envelope) (any, error) { var d events.StockRejectedData; return &d, e.DecodeData(&d) },
		},
		{
			events.StockReleased, "inventory.released",
			&events.StockReleasedData{OrderID: "o1"},
			func(e events.Envelope) (any, error) { var d events.StockReleasedData; return &d, e.DecodeData(&d) },
		},
	}
	for _, c := range cases {
		t.Run(string(c.typ), func(t *testing.T) {
			e := mustNew(t, c.typ, "o1", c.data)
			e.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
			if e.SpecVersion != events.SpecVersion || e.SchemaVersion != events.SchemaVersion || e.ID == "" ||
				e.Source != "converge/test" || e.Type != c.typ || e.Subject != "o1" || e.DataContentType != "application/json" {
				t.Errorf("New: got %+v, want specversion %s, schemaversion %s, an id, source converge/test, type %s, subject o1",
					e, events.SpecVersion, events.SchemaVersion, c.typ)
			}
			if e.Time.Location() != time.UTC || !e.Time.Equal(testTime) {
				t.Errorf("New time: got %v, want %v in UTC", e.Time, testTime)
			}
			if got := e.BrokerSubject(); got != c.subject {
				t.Errorf("BrokerSubject: got %q, want %q", got, c.subject)
			}
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			got, err := events.Decode(b)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !got.Time.Equal(e.Time) {
				t.Errorf("Decode time: got %v, want %v", got.Time, e.Time)
			}
			gotT, wantT := got, e
			gotT.Time, wantT.Time = time.Time{}, time.Time{}
			if !reflect.DeepEqual(gotT, wantT) {
				t.Errorf("Decode:\n got %+v\nwant %+v", gotT, wantT)
			}
			data, err := c.decode(got)
			if err != nil {
				t.Fatalf("DecodeData: %v", err)
			}
			if !reflect.DeepEqual(data, c.data) {
				t.Errorf("DecodeData: got %+v, want %+v", data, c.data)
			}
		})
	}
}

func TestNewIDsAreUniqueAndOrdered(t *testing.T) {
	prev := ""
	for i := range 100 {
		e := mustNew(t, events.OrderCancelled, "o", events.OrderCancelledData{OrderID: "o"})
		if e.ID <= prev {
			t.Fatalf("event %d: id %q is not after the previous id %q", i, e.ID, prev)
		}
		prev = e.ID
	}
}

func TestNewRejectsUnknownType(t *testing.T) {
	_, err := events.New("s", events.Type("io.converge.order.shipped"), "o1", events.OrderCancelledData{OrderID: "o1"}, time.Now())
	if !errors.Is(err, events.ErrUnknown) {
		t.Errorf("New(unknown type): got %v, want an error wrapping ErrUnknown", err)
	}
}

func TestBrokerSubjectOfUnknownTypeIsEmpty(t *testing.T) {
	e := events.Envelope{Type: "io.converge.order.shipped"}
	if got := e.BrokerSubject(); got != "" {
		t.Errorf("BrokerSubject(unknown type): got %q, want \"\"", got)
	}
}

func TestValidSKU(t *testing.T) {
	for sku, want := range map[string]bool{
		"A": true, "abc-DEF_1.2": true, "...": true, "0": true, strings.Repeat("x", events.MaxSKU): true,
		"": false, strings.Repeat("x", events.MaxSKU+1): false, "a:b": false, "a b": false, "é": false,
		"a/b": false, "a\n": false, "a\x00": false, "A-1\n": false,
	} {
		if got := events.ValidSKU(sku); got != want {
			t.Errorf("ValidSKU(%q): got %v, want %v", sku, got, want)
		}
	}
}

// TestValidSKUMatchesPattern holds ValidSKU to the pattern the API documents
// (api/openapi.json) for every single byte, at both length limits.
func TestValidSKUMatchesPattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	for b := range 256 {
		for _, s := range []string{
			string([]byte{byte(b)}),
			"A" + string([]byte{byte(b)}) + "z",
			strings.Repeat("x", events.MaxSKU-1) + string([]byte{byte(b)}),
			strings.Repeat("x", events.MaxSKU) + string([]byte{byte(b)}),
		} {
			if got, want := events.ValidSKU(s), pattern.MatchString(s); got != want {
				t.Errorf("ValidSKU(%q): got %v, want %v (the pattern's answer)", s, got, want)
			}
		}
	}
}

// envelopeJSON is a valid order.cancelled envelope as a map, with edit
// applied; a nil value in edit deletes the key.
func envelopeJSON(t testing.TB, edit map[string]any) []byte {
	t.Helper()
	m := map[string]any{
		"specversion":     "1.0",
		"id":              "0197a4b0-0000-7000-8000-000000000001",
		"source":          "converge/order",
		"type":            string(events.OrderCancelled),
		"subject":         "o1",
		"time":            "2025-01-02T03:04:05Z",
		"datacontenttype": "application/json",
		"schemaversion":   "1",
		"data":            map[string]any{"order_id": "o1"},
	}
	for k, v := range edit {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRejects(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		want error
	}{
		{"not json", []byte(`{"specversion": "1.0",`), events.ErrMalformed},
		{"json array", []byte(`[]`), events.ErrMalformed},
		{"empty", nil, events.ErrMalformed},
		{"id of wrong json type", envelopeJSON(t, map[string]any{"id": 42}), events.ErrMalformed},
		{"specversion 0.3", envelopeJSON(t, map[string]any{"specversion": "0.3"}), events.ErrUnknown},
		{"no specversion", envelopeJSON(t, map[string]any{"specversion": nil}), events.ErrUnknown},
		{"unknown type", envelopeJSON(t, map[string]any{"type": "io.converge.order.shipped"}), events.ErrUnknown},
		{"no type", envelopeJSON(t, map[string]any{"type": nil}), events.ErrUnknown},
		{"schemaversion 2", envelopeJSON(t, map[string]any{"schemaversion": "2"}), events.ErrUnknown},
		{"no schemaversion", envelopeJSON(t, map[string]any{"schemaversion": nil}), events.ErrUnknown},
		{"no id", envelopeJSON(t, map[string]any{"id": nil}), events.ErrMalformed},
		{"empty id", envelopeJSON(t, map[string]any{"id": ""}), events.ErrMalformed},
		{"no source", envelopeJSON(t, map[string]any{"source": nil}), events.ErrMalformed},
		{"no subject", envelopeJSON(t, map[string]any{"subject": nil}), events.ErrMalformed},
		{"no data", envelopeJSON(t, map[string]any{"data": nil}), events.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := events.Decode(c.in)
			if !errors.Is(err, c.want) {
				t.Fatalf("Decode(%s): got envelope %+v, error %v; want an error wrapping %v", c.in, e, err, c.want)
			}
			if !reflect.DeepEqual(e, events.Envelope{}) {
				t.Errorf("Decode(%s) failed but returned a non-zero envelope %+v", c.in, e)
			}
		})
	}
}

func TestDecodeAcceptsValid(t *testing.T) {
	in := envelopeJSON(t, nil)
	e, err := events.Decode(in)
	if err != nil {
		t.Fatalf("Decode(%s): %v", in, err)
	}
	if e.Type != events.OrderCancelled || e.Subject != "o1" || e.BrokerSubject() != "orders.cancelled" {
		t.Errorf("Decode: got type %q subject %q broker subject %q, want %q, o1, orders.cancelled",
			e.Type, e.Subject, e.BrokerSubject(), events.OrderCancelled)
	}
}

func TestDecodeDataRejects(t *testing.T) {
	cases := []struct {
		name string
		data any
	}{
		{"no order_id", map[string]any{"reason": "insufficient_stock"}},
		{"empty order_id", map[string]any{"order_id": ""}},
		{"empty object", map[string]any{}},
		{"order_id of wrong json type", map[string]any{"order_id": 7}},
		{"array", []any{"o1"}},
		{"string", "o1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, err := events.Decode(envelopeJSON(t, map[string]any{"type": string(events.StockRejected), "data": c.data}))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var d events.StockRejectedData
			if err := e.DecodeData(&d); !errors.Is(err, events.ErrMalformed) {
				t.Errorf("DecodeData(%s): got %+v, error %v; want an error wrapping ErrMalformed", e.Data, d, err)
			} else if !strings.Contains(err.Error(), e.ID) {
				t.Errorf("DecodeData error %q does not name the event id %s", err, e.ID)
			}
		})
	}
}

// An explicit "data": null passes Decode (the payload is the 4 bytes
// "null"), but the event must still be refused before it is applied:
// DecodeData finds no order_id.
func TestNullDataIsRefused(t *testing.T) {
	e, err := events.Decode(envelopeJSON(t, map[string]any{"data": json.RawMessage("null")}))
	if err == nil {
		var d events.OrderCancelledData
		err = e.DecodeData(&d)
	}
	if !errors.Is(err, events.ErrMalformed) {
		t.Errorf(`Decode+DecodeData of "data": null: got %v, want an error wrapping ErrMalformed`, err)
	}
}

func TestNewRejectsUnencodableData(t *testing.T) {
	e, err := events.New("s", events.OrderCancelled, "o1", map[string]any{"order_id": make(chan int)}, time.Now())
	if err == nil {
		t.Errorf("New(data with a channel): got %+v, want an error", e)
	}
}
