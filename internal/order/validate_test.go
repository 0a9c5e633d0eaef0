package order_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/order"
)

// items returns n distinct valid items.
func items(n int) []order.Item {
	out := make([]order.Item, n)
	for i := range out {
		out[i] = order.Item{SKU: fmt.Sprintf("SKU-%03d", i), Quantity: 1}
	}
	return out
}

func one(sku string, qty int) []order.Item { return []order.Item{{SKU: sku, Quantity: qty}} }

func TestPlaceInputValidate(t *testing.T) {
	cases := []struct {
		name string
		in   order.PlaceInput
		want string // substring of the error; "" means valid
	}{
		{"minimal", order.PlaceInput{CustomerID: "c", Items: one("A", 1)}, ""},
		{"empty customer", order.PlaceInput{CustomerID: "", Items: one("A", 1)}, "customer_id"},
		{"customer 128 ascii", order.PlaceInput{CustomerID: strings.Repeat("c", 128), Items: one("A", 1)}, ""},
		{"customer 129 ascii", order.PlaceInput{CustomerID: strings.Repeat("c", 129), Items: one("A", 1)}, "customer_id"},
		{"customer 128 runes of 2 bytes", order.PlaceInput{CustomerID: strings.Repeat("é", 128), Items: one("A", 1)}, ""},
		{"customer 128 runes of 4 bytes", order.PlaceInput{CustomerID: strings.Repeat("😀", 128), Items: one("A", 1)}, ""},
		{"customer 129 runes", order.PlaceInput{CustomerID: strings.Repeat("é", 129), Items: one("A", 1)}, "customer_id"},
		{"nil items", order.PlaceInput{CustomerID: "c"}, "1 to 100 items, got 0"},
		{"empty items", order.PlaceInput{CustomerID: "c", Items: []order.Item{}}, "1 to 100 items, got 0"},
		{"100 items", order.PlaceInput{CustomerID: "c", Items: items(100)}, ""},
		{"101 items", order.PlaceInput{CustomerID: "c", Items: items(101)}, "1 to 100 items, got 101"},
		{"sku all allowed characters", order.PlaceInput{CustomerID: "c", Items: one("Az09._-", 1)}, ""},
		{"sku 64 chars", order.PlaceInput{CustomerID: "c", Items: one(strings.Repeat("s", 64), 1)}, ""},
		{"sku 65 chars", order.PlaceInput{CustomerID: "c", Items: one(strings.Repeat("s", 65), 1)}, "items[0].sku"},
		{"empty sku", order.PlaceInput{CustomerID: "c", Items: one("", 1)}, "items[0].sku"},
		{"sku with space", order.PlaceInput{CustomerID: "c", Items: one("A B", 1)}, "items[0].sku"},
		{"sku with slash", order.PlaceInput{CustomerID: "c", Items: one("A/B", 1)}, "items[0].sku"},
		{"sku with non-ascii letter", order.PlaceInput{CustomerID: "c", Items: one("Ä", 1)}, "items[0].sku"},
		{"sku with newline", order.PlaceInput{CustomerID: "c", Items: one("A\n", 1)}, "items[0].sku"},
		{"bad sku on second item", order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 1}, {SKU: "B*", Quantity: 1}}}, "items[1].sku"},
		{"quantity 0", order.PlaceInput{CustomerID: "c", Items: one("A", 0)}, "items[0].quantity"},
		{"quantity -1", order.PlaceInput{CustomerID: "c", Items: one("A", -1)}, "items[0].quantity"},
		{"quantity 1", order.PlaceInput{CustomerID: "c", Items: one("A", 1)}, ""},
		{"quantity 10000", order.PlaceInput{CustomerID: "c", Items: one("A", order.MaxQuantity)}, ""},
		{"quantity 10001", order.PlaceInput{CustomerID: "c", Items: one("A", order.MaxQuantity+1)}, "items[0].quantity must be 1 to 10000, got 10001"},
		{"duplicate sku", order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "A", Quantity: 1}, {SKU: "B", Quantity: 1}, {SKU: "A", Quantity: 2}}}, `sku "A" appears twice`},
		{"skus differing in case", order.PlaceInput{CustomerID: "c", Items: []order.Item{{SKU: "a", Quantity: 1}, {SKU: "A", Quantity: 1}}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.in.Validate()
			switch {
			case c.want == "" && err != nil:
				t.Errorf("Validate: got %v, want nil", err)
			case c.want != "" && !errors.Is(err, order.ErrInvalid):
				t.Errorf("Validate: got %v, want an error wrapping ErrInvalid that mentions %q", err, c.want)
			case c.want != "" && !strings.Contains(err.Error(), c.want):
				t.Errorf("Validate: got %q, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	cases := []struct {
		in   string
		want order.Status
		ok   bool
	}{
		{"PENDING", order.Pending, true},
		{"CONFIRMED", order.Confirmed, true},
		{"REJECTED", order.Rejected, true},
		{"CANCELLED", order.Cancelled, true},
		{"", "", false},
		{"pending", "", false},
		{"Confirmed", "", false},
		{"CANCELED", "", false},
		{" PENDING", "", false},
		{"DONE", "", false},
	}
	for _, c := range cases {
		got, err := order.ParseStatus(c.in)
		if c.ok && (err != nil || got != c.want) {
			t.Errorf("ParseStatus(%q): got (%q, %v), want (%q, nil)", c.in, got, err, c.want)
		}
		if !c.ok && (!errors.Is(err, order.ErrInvalid) || got != "") {
			t.Errorf("ParseStatus(%q): got (%q, %v), want (\"\", an error wrapping ErrInvalid)", c.in, got, err)
		}
	}
}
