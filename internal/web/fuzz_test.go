package web_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/web"
)

// fuzzBody has the shape of the API's request bodies: nested objects in a
// list, a pointer, and a map whose keys are free.
type fuzzBody struct {
	CustomerID string         `json:"customer_id"`
	Items      []fuzzItem     `json:"items"`
	Note       *string        `json:"note"`
	Labels     map[string]int `json:"labels"`
}

type fuzzItem struct {
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
}

// FuzzDecode feeds Decode arbitrary bodies; the seed corpus is in
// testdata/fuzz/FuzzDecode. Decode either refuses a body with a one-line
// 400 or 413, or accepts one that encoding/json accepts too, whose every
// object key is exactly a field's name, and that decodes to what it
// encodes to.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		var got fuzzBody
		err := decode(body, &got)
		if err != nil {
			var se *web.StatusError
			if !errors.As(err, &se) || (se.Status != http.StatusBadRequest && se.Status != http.StatusRequestEntityTooLarge) {
				t.Fatalf("Decode(%q): %v (%T), want a 400 or 413 *StatusError", body, err, err)
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("Decode(%q): error %q is not one line", body, err)
			}
			return
		}
		var generic any
		if err := json.Unmarshal(body, &generic); err != nil {
			t.Fatalf("Decode accepted %q, which encoding/json refuses: %v", body, err)
		}
		exactKeys(t, body, generic, map[string]func(any){
			"customer_id": nil,
			"note":        nil,
			"labels":      nil, // a map: any key
			"items": func(v any) {
				list, _ := v.([]any)
				for _, it := range list {
					exactKeys(t, body, it, map[string]func(any){"sku": nil, "quantity": nil})
				}
			},
		})
		raw, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("encode %+v: %v", got, err)
		}
		var again fuzzBody
		if err := decode(raw, &again); err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("Decode(%q) = %+v, whose encoding %s decodes to %+v, %v", body, got, raw, again, err)
		}
	})
}

// exactKeys fails the test if v is an object with a key fields does not
// name, and checks each field's value with its function, if any.
func exactKeys(t *testing.T, body []byte, v any, fields map[string]func(any)) {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		return
	}
	for k, val := range obj {
		check, ok := fields[k]
		if !ok {
			t.Fatalf("Decode accepted %q, which has the key %q", body, k)
		}
		if check != nil {
			check(val)
		}
	}
}

func decode(body []byte, dst any) error {
	r := httptest.NewRequest("POST", "/x", bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	return web.Decode(httptest.NewRecorder(), r, dst)
}
