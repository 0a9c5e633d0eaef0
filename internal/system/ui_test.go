package system_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium is the browser the live page's test drives (Debian's package
// chromium; CI installs it).
const chromium = "/usr/bin/chromium"

// TestLivePage loads /ui/ in a headless Chromium through the load
// balancer, stops the broker with the page's own button, watches the page
// say so and the outbox fill as orders are placed with the page's form,
// starts the broker again and watches everything converge.
func TestLivePage(t *testing.T) {
	if clusterTopology(t) {
		t.Skip("the cluster's page is served by gateway processes, which have no stop and start buttons; this test needs them")
	}
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("no browser at %s (apt-get install chromium): %v", chromium, err)
	}
	d := start(t)
	c := newClient(t, d)
	c.setStock("UI-1", 1000)
	c.setStock("UI-2", 1000)

	page := newBrowser(t)
	// The first action starts the browser, so it takes no deadline (one
	// would stop the browser with it); the rest share one, and each wait
	// names what it waited for.
	run(t, page, "open the page", chromedp.Navigate(d.URL()+"/ui/#key="+testKey+"&admin="+testAdminKey))
	ctx, cancel := context.WithTimeout(page, 2*time.Minute)
	defer cancel()

	parts := []string{"lb", "gateway-1", "gateway-2", "order-1", "inventory-1", "broker", "DB A", "cache A", "DB B", "cache B"}
	for _, p := range parts {
		waitFor(t, ctx, p+" shown up", 0, status(p), func(s string) bool { return strings.HasSuffix(s, "up") })
	}

	run(t, ctx, "click Stop broker", chromedp.Click(chromedp.CSS(`button[data-action="stop"][data-component="broker"]`)))
	waitFor(t, ctx, "the broker shown down", 2*time.Second, status("broker"), func(s string) bool { return strings.HasSuffix(s, "down") })

	placeOrders(t, ctx, 10)
	first := waitFor(t, ctx, "order-1's outbox backlog above 0", 0, figure("order-1", "outbox"), func(s string) bool { return number(s) > 0 })
	placeOrders(t, ctx, 10)
	waitFor(t, ctx, fmt.Sprintf("order-1's outbox backlog above %s", first), 0, figure("order-1", "outbox"),
		func(s string) bool { return number(s) > number(first) })
	waitFor(t, ctx, "20 orders shown PENDING", 0, text("#order-counts"), func(s string) bool { return s == "20 PENDING" })
	screenshot(t, ctx, "ui-broker-down.png")

	run(t, ctx, "click Start broker", chromedp.Click(chromedp.CSS(`button[data-action="start"][data-component="broker"]`)))
	waitFor(t, ctx, "the broker shown up", 0, status("broker"), func(s string) bool { return strings.HasSuffix(s, "up") })
	waitFor(t, ctx, "order-1's outbox backlog 0", 0, figure("order-1", "outbox"), func(s string) bool { return s == "0" })
	waitFor(t, ctx, "20 orders shown CONFIRMED", 0, text("#order-counts"), func(s string) bool { return s == "20 CONFIRMED" })
	screenshot(t, ctx, "ui-recovered.png")
}

// newBrowser starts a headless Chromium of the test's own and returns its
// first tab; the browser is gone when the test ends, before the system.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests run as root
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1500, 1100),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(alloc, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	return tab
}

func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// placeOrders places n orders of UI-1 and UI-2 with the page's form and
// waits for it to say they were placed.
func placeOrders(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	run(t, ctx, "fill the order form",
		chromedp.SetValue(chromedp.CSS("#skus"), "UI-1,UI-2"),
		chromedp.SetValue(chromedp.CSS("#count"), strconv.Itoa(n)),
		chromedp.Click(chromedp.CSS(`#place button[type="submit"]`)))
	want := fmt.Sprintf("placed %d order(s)", n)
	waitFor(t, ctx, "the form to say "+want, 0, text("#place-msg"), func(s string) bool { return s == want })
}

// status is a script that reads a part's status as the page writes it.
func status(name string) string {
	return text(fmt.Sprintf(`#diagram [data-name=%q] [data-field="status"]`, name))
}

func figure(name, key string) string {
	return text(fmt.Sprintf(`#diagram [data-name=%q] [data-figure=%q]`, name, key))
}

// text is a script that reads an element's text, "" while it is absent.
func text(selector string) string {
	return fmt.Sprintf(`(document.querySelector(%q)?.textContent ?? "").trim()`, selector)
}

func number(s string) float64 {
	n, err := strconv.ParseFloat(strings.ReplaceAll(s, ",", ""), 64)
	if err != nil {
		return -1
	}
	return n
}

// waitFor evaluates script in the page every 50 ms until ok holds of its
// text, and returns that text. It fails the test at ctx's deadline, or
// after within if that is not 0, naming what it waited for and what it
// saw last.
func waitFor(t *testing.T, ctx context.Context, what string, within time.Duration, script string, ok func(string) bool) string {
	t.Helper()
	began := time.Now()
	wctx := ctx
	if within > 0 {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, within)
		defer cancel()
	}
	var last string
	for {
		got, err := chromedp.Run(wctx, chromedp.Evaluate[string](script))
		if err == nil {
			last = got
			if ok(got) {
				return got
			}
		}
		select {
		case <-wctx.Done():
			limit := "the test's deadline"
			if within > 0 {
				limit = within.String()
			}
			t.Fatalf("waited %s (limit: %s) for %s; the page showed %q", time.Since(began).Round(time.Millisecond), limit, what, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// screenshot writes the whole page as a PNG to $CONVERGE_TEST_ARTIFACTS,
// or to a temporary directory, and logs where.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("CONVERGE_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("take a screenshot: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestLivePageControls stops and starts a gateway and a service instance
// through the page's endpoint, over HTTP, as its buttons do.
func TestLivePageControls(t *testing.T) {
	if clusterTopology(t) {
		t.Skip("only the embedded system's page has stop and start buttons")
	}
	d := start(t)
	c := newClient(t, d)
	c.setStock("UI-1", 10)
	admin := []string{"Authorization", "Bearer " + testAdminKey}
	control := func(action, part string) response {
		t.Helper()
		return c.do("POST", "/ui/api/control", map[string]string{"action": action, "component": part}, admin...)
	}
	shown := func(part string) string {
		t.Helper()
		var st struct {
			Components []struct{ Name, Status string }
		}
		c.do("GET", "/ui/api/state", nil).decode(t, &st)
		for _, p := range st.Components {
			if p.Name == part {
				return p.Status
			}
		}
		return "absent"
	}

	if r := c.do("POST", "/ui/api/control", map[string]string{"action": "stop", "component": "broker"}); r.Status != http.StatusForbidden {
		t.Fatalf("a stop with the API key: got %d %s, want 403", r.Status, r.Body)
	}
	gws := d.Gateways()
	if r := control("stop", "gateway-2"); r.Status != http.StatusOK {
		t.Fatalf("stop gateway-2: %d %s", r.Status, r.Body)
	}
	waitForRotation(t, d, 5*time.Second, gws[0])
	if r := control("stop", "gateway-1"); r.Status != http.StatusConflict {
		t.Fatalf("stop the last gateway: got %d %s, want 409", r.Status, r.Body)
	}
	if r := control("start", "gateway-2"); r.Status != http.StatusOK {
		t.Fatalf("start gateway-2: %d %s", r.Status, r.Body)
	}
	waitForRotation(t, d, 5*time.Second, gws...)

	if r := control("stop", "order-1"); r.Status != http.StatusOK {
		t.Fatalf("stop order-1: %d %s", r.Status, r.Body)
	}
	eventually(t, 5*time.Second, "order-1 shown down", func() bool { return shown("order-1") == "down" })
	if r := control("start", "order-1"); r.Status != http.StatusOK {
		t.Fatalf("start order-1: %d %s", r.Status, r.Body)
	}
	eventually(t, 5*time.Second, "order-1 shown up", func() bool { return shown("order-1") == "up" })
	// The gateways take it back after a passing check.
	var o orderView
	eventually(t, 5*time.Second, "an order accepted after order-1's restart", func() bool {
		r, err := c.try("POST", "/api/v1/orders", map[string]any{"customer_id": "c-ui", "items": []item{{SKU: "UI-1", Quantity: 1}}})
		if err != nil || r.Status != http.StatusAccepted {
			return false
		}
		r.decode(t, &o)
		return true
	})
	if got := c.final(o.ID); got.Status != "CONFIRMED" {
		t.Fatalf("order after order-1's restart: got %s (%s), want CONFIRMED", got.Status, got.Reason)
	}
}
