package orderhttp

import (
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/web"
)

func handlePlace(svc *order.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if !validKey(key) {
			web.WriteProblem(w, http.StatusBadRequest, "Idempotency-Key must be 1 to 255 visible ASCII characters")
			return
		}
		wait, err := PreferWait(r.Header)
		if err != nil {
			web.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		// The wait counts from the request's arrival (RFC 7240: how long
		// the client will wait for an answer), not from the commit.
		deadline := time.Now().Add(wait)
		w.Header().Add("Vary", "Prefer")
		var in order.PlaceInput
		if err := web.Decode(w, r, &in); err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		o, created, err := svc.Place(r.Context(), in, key, r.Header.Get("traceparent"))
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		if wait > 0 {
			w.Header().Set("Preference-Applied", "wait="+strconv.Itoa(int(wait/time.Second)))
			// The order is stored: a failed wait still answers 202 with
			// it, as without the preference, rather than an error that
			// would invite a retry placing it again.
			if left := time.Until(deadline); left > 0 && o.Status == order.Pending {
				if final, werr := svc.Wait(r.Context(), o.ID, left); werr == nil {
					o = final
				} else if r.Context().Err() == nil {
					log.WarnContext(r.Context(), "waiting for a placed order failed; answering 202", "order", o.ID, "err", werr)
				}
			}
		}
		w.Header().Set("Location", "/api/v1/orders/"+o.ID)
		if !created {
			w.Header().Set("Idempotent-Replayed", "true")
		}
		status := http.StatusAccepted
		switch {
		case wait == 0 || o.Status == order.Pending:
		case created:
			status = http.StatusCreated
		default:
			status = http.StatusOK
		}
		web.WriteJSON(w, status, o)
	})
}

// PreferWait reads the wait preference of RFC 7240 from the Prefer headers:
// how long the client will wait for the order's outcome, in whole seconds
// up to order.MaxWait; 0 without one. Other preferences are ignored, as the
// RFC asks; a wait that is not such a number is refused.
func PreferWait(h http.Header) (time.Duration, error) {
	for _, v := range h.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";") // parameters of a preference: none for wait
			name, val, _ := strings.Cut(pref, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "wait") {
				continue
			}
			val = strings.TrimSpace(val)
			if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1] // a quoted-string
			}
			n, ok := delaySeconds(val)
			if !ok || time.Duration(n)*time.Second > order.MaxWait {
				return 0, fmt.Errorf("the wait of the Prefer header must be whole seconds from 0 to %d, got %q", int(order.MaxWait/time.Second), val)
			}
			return time.Duration(n) * time.Second, nil // the first one counts (RFC 7240, section 2)
		}
	}
	return 0, nil
}

// delaySeconds parses RFC 7240's delta-seconds: 1*DIGIT, no sign. Anything
// longer than four digits is out of every range the API takes (and would
// overflow a Duration), so it is refused here.
func delaySeconds(s string) (int, bool) {
	if s == "" || len(s) > 4 {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func handleGet(svc *order.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		var (
			o   order.Order
			err error
		)
		if s := r.URL.Query().Get("wait"); s != "" {
			d, perr := time.ParseDuration(s)
			if perr != nil || d < 0 || d > order.MaxWait {
				web.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("wait must be a duration from 0s to %s, such as 5s", order.MaxWait))
				return
			}
			o, err = svc.Wait(r.Context(), id, d)
		} else {
			o, err = svc.Get(r.Context(), id)
		}
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, o)
	})
}

func handleList(svc *order.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f := order.Filter{CustomerID: q.Get("customer_id"), After: q.Get("after")}
		if s := q.Get("status"); s != "" {
			st, err := order.ParseStatus(s)
			if err != nil {
				web.Error(w, r, log, statuses(), err)
				return
			}
			f.Status = st
		}
		limit, err := web.QueryLimit(r, order.MaxLimit)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		f.Limit = limit
		page, err := svc.List(r.Context(), f)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, page)
	})
}

func handleCancel(svc *order.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o, changed, err := svc.Cancel(r.Context(), r.PathValue("id"), r.Header.Get("traceparent"))
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		status := http.StatusOK // already cancelled: nothing happened
		if changed {
			status = http.StatusAccepted // the release of stock follows
		}
		web.WriteJSON(w, status, o)
	})
}

// validKey accepts no key, or 1..255 visible ASCII characters.
func validKey(k string) bool {
	if len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func handleTimeline(svc *order.Service, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tl, err := svc.Timeline(r.Context(), r.PathValue("id"))
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, tl)
	})
}
