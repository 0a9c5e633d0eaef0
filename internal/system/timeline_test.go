package system_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

type stepView struct {
	At      time.Time `json:"at"`
	Step    string    `json:"step"`
	Service string    `json:"service"`
	Event   string    `json:"event"`
	Detail  string    `json:"detail"`
}

type timelineView struct {
	OrderID string     `json:"order_id"`
	Status  string     `json:"status"`
	Steps   []stepView `json:"steps"`
}

func (c *client) timeline(id string) timelineView {
	c.t.Helper()
	r := c.do("GET", "/api/v1/orders/"+id+"/timeline", nil)
	if r.Status != http.StatusOK {
		c.t.Fatalf("GET timeline %s: status %d: %s", id, r.Status, r.Body)
	}
	var tl timelineView
	r.decode(c.t, &tl)
	return tl
}

// stepNames lists the steps of tl, sorted, as "service/step".
func stepNames(tl timelineView) []string {
	var out []string
	for _, s := range tl.Steps {
		out = append(out, s.Service+"/"+s.Step)
	}
	slices.Sort(out)
	return out
}

// TestTimeline follows a confirmed, a rejected and a cancelled order
// through the timeline the gateway composes from both services' records.
func TestTimeline(t *testing.T) {
	sys := start(t)
	c := newClient(t, sys)
	c.setStock("TL-1", 5)

	confirmed := c.place("c-tl", item{"TL-1", 2})
	rejected := c.place("c-tl", item{"TL-1", 50})
	cancelled := c.place("c-tl", item{"TL-1", 1})
	c.finals(confirmed.ID, rejected.ID, cancelled.ID)
	if r := c.do("POST", "/api/v1/orders/"+cancelled.ID+"/cancel", nil); r.Status != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}

	placed := []string{"order/accepted", "order/committed", "order/published", "inventory/delivered"}
	cases := []struct {
		id     string
		status string
		steps  []string
		// causal lists steps that must come in this order in time: each
		// was recorded after the one before it had happened.
		causal []string
	}{
		{confirmed.ID, "CONFIRMED",
			append(slices.Clone(placed), "inventory/reserved", "inventory/reply published", "order/applied"),
			[]string{"order/accepted", "order/committed", "inventory/delivered", "inventory/reserved", "order/applied"}},
		{rejected.ID, "REJECTED",
			append(slices.Clone(placed), "inventory/rejected", "inventory/reply published", "order/applied"),
			[]string{"order/accepted", "order/committed", "inventory/delivered", "inventory/rejected", "order/applied"}},
		{cancelled.ID, "CANCELLED",
			append(slices.Clone(placed), "inventory/reserved", "inventory/reply published", "order/applied",
				"order/cancel committed", "order/cancel published", "inventory/cancel delivered",
				"inventory/released", "inventory/release published", "order/release applied"),
			[]string{"order/accepted", "order/committed", "inventory/delivered", "inventory/reserved", "order/applied",
				"order/cancel committed", "inventory/cancel delivered", "inventory/released", "order/release applied"}},
	}
	for _, tc := range cases {
		want := slices.Clone(tc.steps)
		slices.Sort(want)
		// The last steps (a reply applied, a release) follow the final
		// status by a moment.
		var tl timelineView
		settle(t, 10*time.Second, func() bool { tl = c.timeline(tc.id); return slices.Equal(stepNames(tl), want) })
		if got := stepNames(tl); !slices.Equal(got, want) {
			t.Errorf("timeline of %s order %s:\n got %v\nwant %v", tc.status, tc.id, got, want)
			continue
		}
		if tl.OrderID != tc.id || tl.Status != tc.status {
			t.Errorf("timeline of %s: order %s, status %s; want %s, %s", tc.id, tl.OrderID, tl.Status, tc.id, tc.status)
		}
		if !slices.IsSortedFunc(tl.Steps, func(a, b stepView) int { return a.At.Compare(b.At) }) {
			t.Errorf("timeline of %s is not in time order: %+v", tc.id, tl.Steps)
		}
		at := map[string]time.Time{}
		for _, s := range tl.Steps {
			at[s.Service+"/"+s.Step] = s.At
		}
		for i := 1; i < len(tc.causal); i++ {
			if before, after := tc.causal[i-1], tc.causal[i]; at[after].Before(at[before]) {
				t.Errorf("timeline of %s order: %s at %s, before %s at %s", tc.status, after, at[after], before, at[before])
			}
		}
		if tc.status == "REJECTED" {
			for _, s := range tl.Steps {
				if s.Step == "rejected" && !strings.Contains(s.Detail, "insufficient_stock") {
					t.Errorf("rejected step: detail %q, want the reason insufficient_stock", s.Detail)
				}
			}
		}
	}

	if r := c.do("GET", "/api/v1/orders/no-such-order/timeline", nil); r.Status != http.StatusNotFound {
		t.Errorf("timeline of an unknown order: status %d, want 404: %s", r.Status, r.Body)
	}
	if r := c.do("POST", "/api/v1/orders/"+confirmed.ID+"/timeline", nil); r.Status != http.StatusMethodNotAllowed {
		t.Errorf("POST timeline: status %d, want 405: %s", r.Status, r.Body)
	}
	if r := c.do("GET", "/api/v1/orders/"+confirmed.ID+"/timeline", nil, "Authorization", ""); r.Status != http.StatusUnauthorized {
		t.Errorf("timeline without the key: status %d, want 401", r.Status)
	}
}
