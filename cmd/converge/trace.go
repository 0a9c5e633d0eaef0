package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/convergehq/converge/internal/timeline"
	"github.com/convergehq/converge/internal/web"
)

// runTrace prints an order's timeline: `converge trace ORDER_ID`, over
// HTTP through the load balancer, like any client.
func runTrace(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("trace")
	base := fs.String("url", "http://127.0.0.1:8080", "base URL of the system (the load balancer)")
	key := fs.String("api-key", "", "API key (default: the one converge dev keeps in --data)")
	dataDir := fs.String("data", "./converge-data", "data directory of converge dev, read only for its api-key file when --api-key is not given")
	asJSON := fs.Bool("json", false, "print the timeline as JSON, as the API returns it")
	// The order id may stand anywhere among the flags.
	ids, err := parseFlagsArgs(fs, args, getenv, stdout)
	if err != nil {
		return err
	}
	const usage = "converge trace ORDER_ID [--url URL] [--api-key KEY] [--json]"
	switch {
	case len(ids) == 0:
		return usageError{"trace: give the order id: " + usage}
	case len(ids) > 1:
		return usageError{fmt.Sprintf("trace: give one order id, not %d (%q): %s", len(ids), ids, usage)}
	}
	id := ids[0]
	u, err := url.Parse(*base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Sprintf("trace: --url %q is not an absolute http(s) URL", *base)}
	}
	if *key == "" {
		if *key, err = keptAPIKey(*dataDir); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
		if *key == "" {
			return usageError{fmt.Sprintf("trace: --api-key is required (or CONVERGE_API_KEY, or an api-key file in --data, here %s)", filepath.Join(*dataDir, "api-key"))}
		}
	}
	tl, raw, err := fetchTimeline(ctx, strings.TrimRight(*base, "/"), *key, id)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	if *asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	return printTimeline(stdout, tl)
}

// keptAPIKey reads the API key converge dev keeps in its data directory;
// "" when there is none.
func keptAPIKey(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "api-key"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read API key: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// fetchTimeline asks the system for the timeline of order id.
func fetchTimeline(ctx context.Context, base, key, id string) (timeline.Timeline, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/orders/"+url.PathEscape(id)+"/timeline", nil)
	if err != nil {
		return timeline.Timeline{}, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return timeline.Timeline{}, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return timeline.Timeline{}, nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var p web.Problem
		if json.Unmarshal(raw, &p) == nil && p.Detail != "" {
			return timeline.Timeline{}, nil, fmt.Errorf("order %s: %s: %s", id, resp.Status, p.Detail)
		}
		return timeline.Timeline{}, nil, fmt.Errorf("order %s: %s", id, resp.Status)
	}
	var tl timeline.Timeline
	if err := json.Unmarshal(raw, &tl); err != nil {
		return timeline.Timeline{}, nil, fmt.Errorf("order %s: the answer is not a timeline: %w", id, err)
	}
	return tl, raw, nil
}

// printTimeline writes one line per step: its time (UTC), the time since
// the first step, the service that recorded it, the step and what it says.
func printTimeline(w io.Writer, tl timeline.Timeline) error {
	fmt.Fprintf(w, "order %s  %s\n\n", tl.OrderID, tl.Status)
	if len(tl.Steps) == 0 {
		fmt.Fprintln(w, "  no steps recorded")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  TIME (UTC)\tSINCE\tSERVICE\tSTEP\tDETAIL")
	first := tl.Steps[0].At
	for _, s := range tl.Steps {
		fmt.Fprintf(tw, "  %s\t+%s\t%s\t%s\t%s\n", s.At.UTC().Format("15:04:05.000000"), s.At.Sub(first).Round(time.Microsecond), s.Service, s.Step, s.Detail)
	}
	return tw.Flush()
}
