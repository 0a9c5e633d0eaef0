package events_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/convergehq/converge/internal/events"
)

// FuzzDecode feeds Decode and DecodeData arbitrary messages, as a consumer
// may receive them; the seed corpus is in testdata/fuzz/FuzzDecode. A
// message is refused as malformed or unknown (both dead-lettered), or
// accepted with a known type and a payload, and then survives being
// encoded and decoded again unchanged; its payload is read into its type
// or refused as malformed.
func FuzzDecode(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte) {
		e, err := events.Decode(msg)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) && !errors.Is(err, events.ErrUnknown) {
				t.Fatalf("Decode(%q): %v, want an error wrapping ErrMalformed or ErrUnknown", msg, err)
			}
			if !reflect.DeepEqual(e, events.Envelope{}) {
				t.Fatalf("Decode(%q) failed but returned %+v", msg, e)
			}
			return
		}
		if e.BrokerSubject() == "" || len(e.Data) == 0 {
			t.Fatalf("Decode(%q) accepted %+v: no subject or no data", msg, e)
		}
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("Decode(%q) accepted %+v, which does not encode: %v", msg, e, err)
		}
		again, err := events.Decode(raw)
		if err != nil {
			t.Fatalf("Decode(%q) accepted %+v, whose encoding %s it refuses: %v", msg, e, raw, err)
		}
		if !sameEnvelope(e, again) {
			t.Fatalf("Decode(%q) = %+v, whose encoding %s decodes to %+v", msg, e, raw, again)
		}

		var orderID string
		switch e.Type {
		case events.OrderCreated:
			var d events.OrderCreatedData
			err, orderID = e.DecodeData(&d), d.OrderID
		case events.OrderCancelled:
			var d events.OrderCancelledData
			err, orderID = e.DecodeData(&d), d.OrderID
		case events.StockReserved:
			var d events.StockReservedData
			err, orderID = e.DecodeData(&d), d.OrderID
		case events.StockRejected:
			var d events.StockRejectedData
			err, orderID = e.DecodeData(&d), d.OrderID
		case events.StockReleased:
			var d events.StockReleasedData
			err, orderID = e.DecodeData(&d), d.OrderID
		default:
			t.Fatalf("Decode(%q) accepted type %q, which has no payload type", msg, e.Type)
		}
		if err == nil && orderID == "" {
			t.Fatalf("DecodeData(%s) accepted a payload without an order id", e.Data)
		}
		if err != nil && !errors.Is(err, events.ErrMalformed) {
			t.Fatalf("DecodeData(%s): %v, want nil or an error wrapping ErrMalformed", e.Data, err)
		}
	})
}

// sameEnvelope compares two envelopes, the payload as the JSON value it
// holds (encoding escapes "&" in it, for one) and the time as an instant.
func sameEnvelope(a, b events.Envelope) bool {
	var da, db any
	if json.Unmarshal(a.Data, &da) != nil || json.Unmarshal(b.Data, &db) != nil || !reflect.DeepEqual(da, db) {
		return false
	}
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Data, b.Data, a.Time = nil, nil, b.Time
	return reflect.DeepEqual(a, b)
}
