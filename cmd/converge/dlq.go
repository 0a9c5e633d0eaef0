package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/convergehq/converge/internal/dlq"
	"github.com/convergehq/converge/internal/dlq/dlqhttp"
)

const dlqUsage = `usage: converge dlq <ls|show|replay|discard> [flags] [SEQ...]

  ls                   list dead letters (--consumer, --type, --reason filter; --after pages)
  show SEQ             one dead letter: its error, origin, headers and payload
  replay SEQ...        publish dead letters again to their consumer, then remove them
  replay --consumer C  ... or every dead letter matching the filters (or --all)
  discard SEQ...       remove dead letters without replaying them
  discard --reason R   ... or every dead letter matching the filters (or --all)

They talk to the admin API through the load balancer (--url) with the admin
key (--admin-key, CONVERGE_ADMIN_KEY, or the admin-key file converge dev keeps
in --data). Run 'converge dlq <command> -h' for the flags.`

// dlqClient calls the admin API.
type dlqClient struct {
	base string // the load balancer's URL, without a trailing slash
	key  string
	http *http.Client
}

// dlqFlags are the flags every dlq command has.
type dlqFlags struct {
	url, key, data string
	json           bool
}

func (f *dlqFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.url, "url", "http://127.0.0.1:8080", "base URL of the system (the load balancer)")
	fs.StringVar(&f.key, "admin-key", "", "admin key (default: the one converge dev keeps in --data)")
	fs.StringVar(&f.data, "data", "./converge-data", "data directory of converge dev, read only for its admin-key file when --admin-key is not given")
	fs.BoolVar(&f.json, "json", false, "print the API's JSON instead of a table")
}

func (f *dlqFlags) client(cmd string) (*dlqClient, error) {
	u, err := url.Parse(f.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageError{fmt.Sprintf("%s: --url %q is not an http(s) URL", cmd, f.url)}
	}
	key := f.key
	if key == "" {
		path := filepath.Join(f.data, "admin-key")
		b, err := os.ReadFile(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: read admin key: %w", cmd, err)
		}
		if key = strings.TrimSpace(string(b)); key == "" {
			return nil, usageError{fmt.Sprintf("%s: --admin-key is required (or CONVERGE_ADMIN_KEY, or an admin-key file in --data, here %s)", cmd, path)}
		}
	}
	return &dlqClient{base: strings.TrimRight(f.url, "/"), key: key, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

func runDLQ(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"dlq: no command given; want ls, show, replay or discard ('converge dlq help')"}
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "ls":
		return dlqList(ctx, rest, getenv, stdout)
	case "show":
		return dlqShow(ctx, rest, getenv, stdout)
	case "replay", "discard":
		return dlqAct(ctx, sub, rest, getenv, stdout)
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, dlqUsage)
		return nil
	}
	return usageError{fmt.Sprintf("dlq: unknown command %q; want ls, show, replay or discard", sub)}
}

// filterFlags are the filters of ls, and of replay and discard.
type filterFlags struct{ consumer, typ, reason string }

func (f *filterFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.consumer, "consumer", "", "only dead letters of this consumer (order, inventory)")
	fs.StringVar(&f.typ, "type", "", "only events of this type (io.converge.order.created, ...)")
	fs.StringVar(&f.reason, "reason", "", "only dead letters whose error contains this text (any case)")
}

func (f filterFlags) any() bool { return f.consumer != "" || f.typ != "" || f.reason != "" }

func dlqList(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		common dlqFlags
		filter filterFlags
	)
	fs := newFlagSet("dlq ls")
	common.register(fs)
	filter.register(fs)
	after := fs.String("after", "", "the next value of the previous page")
	limit := fs.Int("limit", dlq.DefaultLimit, fmt.Sprintf("dead letters per page, 1 to %d", dlq.MaxLimit))
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	if *limit < 1 || *limit > dlq.MaxLimit {
		return usageError{fmt.Sprintf("dlq ls: --limit must be 1 to %d, got %d", dlq.MaxLimit, *limit)}
	}
	c, err := common.client("dlq ls")
	if err != nil {
		return err
	}
	q := url.Values{"limit": {strconv.Itoa(*limit)}}
	for k, v := range map[string]string{"consumer": filter.consumer, "type": filter.typ, "reason": filter.reason, "after": *after} {
		if v != "" {
			q.Set(k, v)
		}
	}
	var page dlq.Page
	raw, err := c.do(ctx, http.MethodGet, "dead-letters?"+q.Encode(), nil, &page)
	if err != nil {
		return fmt.Errorf("dlq ls: %w", err)
	}
	if common.json {
		_, err := stdout.Write(raw)
		return err
	}
	if len(page.Items) == 0 && page.Next == "" {
		fmt.Fprintln(stdout, "no dead letters")
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tCONSUMER\tTYPE\tDELIVERIES\tDEAD-LETTERED\tERROR")
	for _, l := range page.Items {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", l.Seq, l.Consumer, dash(l.Type), l.Deliveries,
			l.DeadLetteredAt.Local().Format(time.DateTime), clip(l.Error, 70))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		fmt.Fprintf(stdout, "more: converge dlq ls --after %s\n", page.Next)
	}
	return nil
}

func dlqShow(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var common dlqFlags
	fs := newFlagSet("dlq show")
	common.register(fs)
	rest, err := parseFlagsArgs(fs, args, getenv, stdout)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageError{"dlq show: give one dead letter's SEQ (converge dlq ls lists them)"}
	}
	seq, err := parseSeq("dlq show", rest[0])
	if err != nil {
		return err
	}
	c, err := common.client("dlq show")
	if err != nil {
		return err
	}
	var l dlq.Letter
	raw, err := c.do(ctx, http.MethodGet, "dead-letters/"+strconv.FormatUint(seq, 10), nil, &l)
	if err != nil {
		return fmt.Errorf("dlq show: %w", err)
	}
	if common.json {
		_, err := stdout.Write(raw)
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, row := range [][2]string{
		{"seq", strconv.FormatUint(l.Seq, 10)},
		{"consumer", l.Consumer},
		{"type", dash(l.Type)},
		{"message id", dash(l.MsgID)},
		{"error", l.Error},
		{"deliveries", strconv.FormatUint(l.Deliveries, 10)},
		{"original", fmt.Sprintf("%s, stream %s #%d", l.OriginalSubject, l.OriginalStream, l.OriginalSeq)},
		{"dead-lettered", l.DeadLetteredAt.Local().Format(time.RFC3339)},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nheaders:")
	names := make([]string, 0, len(l.Headers))
	for k := range l.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		for _, v := range l.Headers[k] {
			fmt.Fprintf(stdout, "  %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(stdout, "\npayload:")
	var pretty bytes.Buffer
	switch {
	case l.Payload != nil && json.Indent(&pretty, l.Payload, "  ", "  ") == nil:
		fmt.Fprintf(stdout, "  %s\n", pretty.String())
	default:
		fmt.Fprintf(stdout, "  %q\n", l.PayloadBase64)
	}
	return nil
}

// dlqAct replays or discards: the dead letters named, or every one
// matching the filters (or --all), asking the API again while it says more
// match.
func dlqAct(ctx context.Context, verb string, args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		common dlqFlags
		filter filterFlags
	)
	cmd := "dlq " + verb
	fs := newFlagSet(cmd)
	common.register(fs)
	filter.register(fs)
	all := fs.Bool("all", false, "every dead letter (instead of SEQs or filters)")
	rest, err := parseFlagsArgs(fs, args, getenv, stdout)
	if err != nil {
		return err
	}
	selecting := filter.any() || *all
	switch {
	case len(rest) > 0 && selecting:
		return usageError{cmd + ": give SEQs or filters (--consumer, --type, --reason, --all), not both"}
	case len(rest) == 0 && !selecting:
		return usageError{cmd + ": give the SEQs of dead letters, or filters (--consumer, --type, --reason), or --all"}
	case filter.any() && *all:
		return usageError{cmd + ": give filters or --all, not both"}
	}
	seqs := make([]uint64, len(rest))
	for i, a := range rest {
		if seqs[i], err = parseSeq(cmd, a); err != nil {
			return err
		}
	}
	c, err := common.client(cmd)
	if err != nil {
		return err
	}
	if selecting {
		return dlqBulk(ctx, c, verb, dlqhttp.Selection{Consumer: filter.consumer, Type: filter.typ, Reason: filter.reason, All: *all, Limit: dlq.MaxLimit}, common.json, stdout)
	}
	var results []json.RawMessage
	for _, seq := range seqs {
		path := "dead-letters/" + strconv.FormatUint(seq, 10)
		var (
			raw []byte
			r   dlq.Replayed
		)
		if verb == "replay" {
			raw, err = c.do(ctx, http.MethodPost, path+"/replay", nil, &r)
		} else {
			_, err = c.do(ctx, http.MethodDelete, path, nil, nil)
			raw = fmt.Appendf(nil, `{"discarded":%d}`, seq)
		}
		if err != nil {
			if len(results) > 0 {
				return fmt.Errorf("%s %d: %w (the %d before it are done)", cmd, seq, err, len(results))
			}
			return fmt.Errorf("%s %d: %w", cmd, seq, err)
		}
		results = append(results, bytes.TrimSpace(raw))
		switch {
		case common.json:
		case verb == "discard":
			fmt.Fprintf(stdout, "discarded dead letter %d\n", seq)
		case r.Duplicate:
			fmt.Fprintf(stdout, "replayed dead letter %d to %s (the broker had it from an earlier replay: %s #%d)\n", seq, r.Subject, r.Stream, r.StreamSeq)
		default:
			fmt.Fprintf(stdout, "replayed dead letter %d to %s (%s #%d)\n", seq, r.Subject, r.Stream, r.StreamSeq)
		}
	}
	if common.json {
		return json.NewEncoder(stdout).Encode(results)
	}
	return nil
}

func dlqBulk(ctx context.Context, c *dlqClient, verb string, sel dlqhttp.Selection, asJSON bool, stdout io.Writer) error {
	var done []uint64
	for {
		var page struct {
			Replayed  []uint64 `json:"replayed"`
			Discarded []uint64 `json:"discarded"`
			More      bool     `json:"more"`
		}
		if _, err := c.do(ctx, http.MethodPost, verb, sel, &page); err != nil {
			if len(done) > 0 {
				return fmt.Errorf("dlq %s: %d done, then: %w", verb, len(done), err)
			}
			return fmt.Errorf("dlq %s: %w", verb, err)
		}
		n := len(done)
		done = append(append(done, page.Replayed...), page.Discarded...)
		// Each call removes what it did; one that did nothing while more
		// match would only repeat itself.
		if !page.More || len(done) == n {
			break
		}
	}
	if asJSON {
		key := map[string]string{"replay": "replayed", "discard": "discarded"}[verb]
		return json.NewEncoder(stdout).Encode(map[string][]uint64{key: done})
	}
	past := map[string]string{"replay": "replayed", "discard": "discarded"}[verb]
	if len(done) == 0 {
		fmt.Fprintf(stdout, "no dead letters matched; nothing %s\n", past)
		return nil
	}
	fmt.Fprintf(stdout, "%s %d dead letters: %s\n", past, len(done), strings.Trim(fmt.Sprint(done), "[]"))
	return nil
}

// do sends a request to the admin API and decodes a 2xx answer into out
// (when not nil); it returns the raw body. Any other answer is an error
// with the problem's detail.
func (c *dlqClient) do(ctx context.Context, method, path string, body, out any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+dlqhttp.Prefix+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, problemError(resp, raw)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("decode the answer: %w", err)
		}
	}
	return raw, nil
}

// problemError is the one line a user reads for a refused request.
func problemError(resp *http.Response, raw []byte) error {
	var p struct {
		Detail string `json:"detail"`
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/problem+json" && json.Unmarshal(raw, &p) == nil && p.Detail != "" {
		return fmt.Errorf("%s (HTTP %d)", p.Detail, resp.StatusCode)
	}
	return fmt.Errorf("HTTP %s from %s", resp.Status, resp.Request.URL.Redacted())
}

func parseSeq(cmd, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, usageError{fmt.Sprintf("%s: %q is not a dead letter's SEQ (a whole number from 1; converge dlq ls lists them)", cmd, s)}
	}
	return n, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// clip shortens s to n runes for a table cell.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
