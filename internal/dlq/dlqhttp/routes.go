// Package dlqhttp is the admin API over the dead-letter stream. routes.go
// is the whole API in one place; the gateway forwards /api/v1/admin/* here
// after checking the admin key, so this handler checks none itself (the
// services are reached only through the gateways).
package dlqhttp

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/web"
)

// Prefix is the path every route of this API starts with.
const Prefix = "/api/v1/admin/"

// Routes returns the admin API's handler.
func Routes(q *dlq.Queue, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	// web.Query names the query parameters each route takes; any other is a 400.
	mux.Handle("GET /api/v1/admin/dead-letters", web.Query(handleList(q, log), "consumer", "type", "reason", "after", "limit"))
	mux.Handle("GET /api/v1/admin/dead-letters/{seq}", web.Query(handleGet(q, log)))
	mux.Handle("DELETE /api/v1/admin/dead-letters/{seq}", web.Query(handleDiscard(q, log)))
	mux.Handle("POST /api/v1/admin/dead-letters/{seq}/replay", web.Query(handleReplay(q, log)))
	mux.Handle("POST /api/v1/admin/replay", web.Query(handleReplayAll(q, log)))
	mux.Handle("POST /api/v1/admin/discard", web.Query(handleDiscardAll(q, log)))
	return web.Handler(mux)
}

func statuses() web.Statuses {
	return web.Statuses{
		{Err: dlq.ErrNotFound, Status: http.StatusNotFound},
		{Err: dlq.ErrInvalid, Status: http.StatusBadRequest},
		{Err: dlq.ErrNotReplayable, Status: http.StatusConflict},
		{Err: dlq.ErrUnavailable, Status: http.StatusServiceUnavailable},
	}
}

func handleList(q *dlq.Queue, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		query := r.URL.Query()
		f := dlq.Filter{Consumer: query.Get("consumer"), Type: query.Get("type"), Reason: query.Get("reason")}
		if s := query.Get("after"); s != "" {
			after, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				web.WriteProblem(w, http.StatusBadRequest, "after must be the next value of a previous page (a whole number)")
				return
			}
			f.After = after
		}
		limit, err := web.QueryLimit(r, dlq.MaxLimit)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		f.Limit = limit
		page, err := q.List(r.Context(), f)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, page)
	})
}

// seq reads the {seq} path value.
func seq(r *http.Request) (uint64, error) {
	n, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || n == 0 {
		return 0, &web.StatusError{Status: http.StatusBadRequest, Err: fmt.Errorf("%q is not a dead letter's sequence (a whole number from 1)", r.PathValue("seq"))}
	}
	return n, nil
}

func handleGet(q *dlq.Queue, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := seq(r)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		l, err := q.Get(r.Context(), n)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, l)
	})
}

func handleReplay(q *dlq.Queue, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := seq(r)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		done, err := q.Replay(r.Context(), n)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		log.InfoContext(r.Context(), "dead letter replayed", "seq", n, "subject", done.Subject, "stream_seq", done.StreamSeq, "duplicate", done.Duplicate)
		web.WriteJSON(w, http.StatusOK, done)
	})
}

func handleDiscard(q *dlq.Queue, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := seq(r)
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		if err := q.Discard(r.Context(), n); err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		log.InfoContext(r.Context(), "dead letter discarded", "seq", n)
		w.WriteHeader(http.StatusNoContent)
	})
}

// Selection is the body of a bulk replay or discard: the filters, or All
// to take every dead letter; an empty selection is refused, so that a
// forgotten filter does not act on everything.
type Selection struct {
	Consumer string `json:"consumer"`
	Type     string `json:"type"`
	Reason   string `json:"reason"`
	All      bool   `json:"all"`
	Limit    int    `json:"limit"` // at most this many in this call; 0 = dlq.DefaultLimit
}

func (s Selection) filter() (dlq.Filter, error) {
	f := dlq.Filter{Consumer: s.Consumer, Type: s.Type, Reason: s.Reason, Limit: s.Limit}
	switch {
	case f.Any() && s.All:
		return f, &web.StatusError{Status: http.StatusBadRequest, Err: fmt.Errorf("give filters (consumer, type, reason) or all, not both")}
	case !f.Any() && !s.All:
		return f, &web.StatusError{Status: http.StatusBadRequest, Err: fmt.Errorf("give at least one filter (consumer, type, reason), or all: true")}
	}
	return f, nil
}

// ReplayedAll and DiscardedAll answer a bulk operation: the dead letters it
// acted on and whether more match (send the same request again).
type (
	ReplayedAll struct {
		Replayed []uint64 `json:"replayed"`
		More     bool     `json:"more"`
	}
	DiscardedAll struct {
		Discarded []uint64 `json:"discarded"`
		More      bool     `json:"more"`
	}
)

func handleReplayAll(q *dlq.Queue, log *slog.Logger) http.Handler {
	return handleBulk(log, "replayed", q.ReplayAll, func(d dlq.Done) any { return ReplayedAll{Replayed: d.Seqs, More: d.More} })
}

func handleDiscardAll(q *dlq.Queue, log *slog.Logger) http.Handler {
	return handleBulk(log, "discarded", q.DiscardAll, func(d dlq.Done) any { return DiscardedAll{Discarded: d.Seqs, More: d.More} })
}

func handleBulk(log *slog.Logger, verb string, do func(context.Context, dlq.Filter) (dlq.Done, error), answer func(dlq.Done) any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sel Selection
		if err := web.Decode(w, r, &sel); err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		f, err := sel.filter()
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		done, err := do(r.Context(), f)
		if n := len(done.Seqs); n > 0 {
			log.InfoContext(r.Context(), "dead letters "+verb, "count", n, "first", done.Seqs[0], "last", done.Seqs[n-1])
		}
		if err != nil {
			web.Error(w, r, log, statuses(), err)
			return
		}
		web.WriteJSON(w, http.StatusOK, answer(done))
	})
}
