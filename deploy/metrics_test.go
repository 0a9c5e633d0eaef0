package deploy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/convergehq/converge/internal/metrics/metricstest"
	"github.com/convergehq/converge/internal/system"
)

// TestPrometheusScrapesEveryRole checks that prometheus/prometheus.yml
// scrapes every converge process of compose.yaml, each on the port its
// metrics are served on, and nothing else.
func TestPrometheusScrapesEveryRole(t *testing.T) {
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			MetricsPath   string `json:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	readYAML(t, "prometheus/prometheus.yml", &cfg)
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s, want /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}

	c := loadCompose(t)
	var want []string
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		addr := ""
		switch s.role(name) {
		case "order", "inventory", "gateway", "lb":
			addr = s.Environment["CONVERGE_ADDR"]
		case "broker":
			addr = s.Environment["CONVERGE_METRICS_ADDR"]
			if addr == "" {
				t.Errorf("%s: no CONVERGE_METRICS_ADDR; the broker's metrics would listen on loopback only", name)
			}
		default:
			continue
		}
		_, port, _ := strings.Cut(addr, ":")
		want = append(want, name+":"+port)
	}
	slices.Sort(targets)
	if !slices.Equal(targets, want) {
		t.Errorf("prometheus.yml scrapes %v, want every converge process of compose.yaml: %v", targets, want)
	}
	if p, ok := c.Services["prometheus"]; !ok || !slices.Contains(p.Volumes, "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro") {
		t.Errorf("compose.yaml: the prometheus service does not mount prometheus/prometheus.yml")
	}
}

// dashboard is what the test reads of a Grafana dashboard: panels, rows'
// panels, and their queries.
type dashboard struct {
	Title  string  `json:"title"`
	UID    string  `json:"uid"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string  `json:"title"`
	Type    string  `json:"type"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func (p panel) exprs() []string {
	var out []string
	for _, t := range p.Targets {
		out = append(out, t.Expr)
	}
	for _, sub := range p.Panels {
		out = append(out, sub.exprs()...)
	}
	return out
}

// metricName finds the names of metrics in a PromQL expression: converge's
// own, and the Go and process collectors'.
var metricName = regexp.MustCompile(`\b(?:converge|go|process)_[a-z0-9_]+\b`)

// TestDashboardQueriesRegisteredMetrics parses the Grafana dashboard and
// checks that every metric it queries is one the roles serve: it starts
// the embedded system, moves one order through it and scrapes every role.
func TestDashboardQueriesRegisteredMetrics(t *testing.T) {
	raw, err := os.ReadFile("grafana/dashboards/converge.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("converge.json: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard: title %q, uid %q; want both", d.Title, d.UID)
	}
	queried := map[string][]string{} // metric -> panels
	n := 0
	for _, p := range d.Panels {
		for _, sub := range append([]panel{p}, p.Panels...) {
			for _, e := range sub.exprs() {
				n++
				for _, m := range metricName.FindAllString(e, -1) {
					queried[m] = append(queried[m], sub.Title)
				}
			}
			if sub.Type != "row" && len(sub.exprs()) == 0 {
				t.Errorf("panel %q queries nothing", sub.Title)
			}
		}
	}
	if n == 0 || len(queried) == 0 {
		t.Fatal("dashboard: no queries found; the check would pass vacuously")
	}

	served := map[string]bool{}
	for _, name := range servedMetrics(t).Names() {
		served[name] = true
	}
	for _, m := range slices.Sorted(maps.Keys(queried)) {
		if !served[m] {
			t.Errorf("dashboard panel %q queries %s, which no role serves", queried[m][0], m)
		}
	}
}

// servedMetrics starts the embedded system, moves an order through it,
// and returns the metric families the roles serve, all together.
func servedMetrics(t *testing.T) metricstest.Figures {
	t.Helper()
	cfg := system.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.APIKey, cfg.BrokerPort = "127.0.0.1:0", t.TempDir(), "test-key", 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := sys.Shutdown(context.WithoutCancel(ctx)); err != nil {
			t.Error(err)
		}
	}()
	client := &http.Client{Timeout: 20 * time.Second}
	call := func(method, path, body string) []byte {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, sys.LBURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer test-key")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode >= 300 {
			t.Fatalf("%s %s: %d %s %v", method, path, resp.StatusCode, b, err)
		}
		return b
	}
	var o struct{ ID, Status string }
	if err := json.Unmarshal(call("POST", "/api/v1/orders", `{"customer_id":"c-1","items":[{"sku":"A-1","quantity":1}]}`), &o); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(call("GET", "/api/v1/orders/"+o.ID+"?wait=10s", ""), &o); err != nil || o.Status == "PENDING" {
		t.Fatalf("order %s: %s %v; want it final", o.ID, o.Status, err)
	}

	served := metricstest.Figures{}
	urls := append([]string{sys.LBURL, sys.OrderURL, sys.InventoryURL, sys.BrokerMetricsURL}, sys.GatewayURLs...)
	for _, u := range urls {
		maps.Copy(served, metricstest.Scrape(t, u+"/metrics"))
	}
	return served
}

// readmeMetric is a row of the README's metrics table:
// | `converge_x` | counter | ...
var readmeMetric = regexp.MustCompile("(?m)^\\|\\s*`(converge_[a-z0-9_]+)`\\s*\\|\\s*(counter|gauge|histogram)\\s*\\|")

// TestReadmeListsEveryMetric checks the README's metrics table against
// what the roles serve: every converge metric listed, with its type, and
// nothing listed that none serves.
func TestReadmeListsEveryMetric(t *testing.T) {
	raw, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for _, m := range readmeMetric.FindAllStringSubmatch(string(raw), -1) {
		listed[m[1]] = m[2]
	}
	if len(listed) == 0 {
		t.Fatal("README.md: no metrics table rows found; the pattern no longer matches the table")
	}
	served := servedMetrics(t)
	for _, name := range slices.Sorted(maps.Keys(served)) {
		if !strings.HasPrefix(name, "converge_") {
			continue
		}
		typ := strings.ToLower(served[name].GetType().String())
		if got, ok := listed[name]; !ok || got != typ {
			t.Errorf("README.md lists %s as %q, want a row with type %s", name, got, typ)
		}
	}
	for name := range listed {
		if _, ok := served[name]; !ok {
			t.Errorf("README.md lists %s, which no role serves", name)
		}
	}
}

// TestGrafanaProvisioning checks that Grafana is given Prometheus as its
// data source and the dashboard directory compose.yaml mounts.
func TestGrafanaProvisioning(t *testing.T) {
	var ds struct {
		Datasources []struct {
			Type, URL, UID string
		} `json:"datasources"`
	}
	readYAML(t, "grafana/provisioning/datasources/prometheus.yml", &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("datasources %+v, want one prometheus at http://prometheus:9090", ds.Datasources)
	}
	var dash struct {
		Providers []struct {
			Options struct {
				Path string `json:"path"`
			} `json:"options"`
		} `json:"providers"`
	}
	readYAML(t, "grafana/provisioning/dashboards/converge.yml", &dash)
	g := loadCompose(t).Services["grafana"]
	for _, p := range dash.Providers {
		if !slices.Contains(g.Volumes, "./grafana/dashboards:"+p.Options.Path+":ro") {
			t.Errorf("dashboards are loaded from %s, which compose.yaml does not mount from ./grafana/dashboards (%v)", p.Options.Path, g.Volumes)
		}
	}
	if len(dash.Providers) == 0 {
		t.Error("no dashboard provider")
	}
	var raw map[string]any
	b, err := os.ReadFile("grafana/dashboards/converge.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	for _, p := range raw["panels"].([]any) {
		if ds, ok := p.(map[string]any)["datasource"].(map[string]any); ok && ds["uid"] != "prometheus" {
			t.Errorf("panel %v uses data source %v, want the provisioned one (uid prometheus)", p.(map[string]any)["title"], ds)
		}
	}
}

// serviceMonitor is what the test checks of one, decoded strictly.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// TestChartServiceMonitors renders the chart with ServiceMonitors on and
// checks that there is one per role, selecting the role's Service on its
// http port. (By default none is rendered: TestChartRenders refuses any
// kind but the Kubernetes API's own.)
func TestChartServiceMonitors(t *testing.T) {
	out, err := render(t, "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prom")
	if err != nil {
		t.Fatal(err)
	}
	rest, monitors, err := splitKind(out, "ServiceMonitor")
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeAll(rest)
	if err != nil {
		t.Fatal(err)
	}
	byRole := map[string]serviceMonitor{}
	for _, doc := range monitors {
		var sm serviceMonitor
		if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
			t.Fatalf("ServiceMonitor: %v\n%s", err, doc)
		}
		byRole[sm.Metadata.Labels["app.kubernetes.io/component"]] = sm
	}
	if len(byRole) != len(roles) {
		t.Errorf("%d ServiceMonitors (%v), want one per role %v", len(byRole), slices.Collect(maps.Keys(byRole)), roles)
	}
	for _, role := range roles {
		sm, svc := byRole[role], m.services[role]
		if svc == nil {
			t.Errorf("no Service for %s", role)
			continue
		}
		if sm.APIVersion != "monitoring.coreos.com/v1" || sm.Metadata.Namespace != svc.Namespace || sm.Metadata.Labels["release"] != "prom" {
			t.Errorf("%s: ServiceMonitor %s in %q with labels %v", role, sm.APIVersion, sm.Metadata.Namespace, sm.Metadata.Labels)
		}
		if len(sm.Spec.Selector.MatchLabels) == 0 || !selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
			t.Errorf("%s: ServiceMonitor selector %v does not select the Service (labels %v)", role, sm.Spec.Selector.MatchLabels, svc.Labels)
		}
		for k, v := range sm.Spec.Selector.MatchLabels {
			for other, o := range m.services {
				if other != role && selects(sm.Spec.Selector.MatchLabels, o.Labels) {
					t.Errorf("%s: ServiceMonitor selector %s=%s selects the %s Service too", role, k, v, other)
				}
			}
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svc.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("%s: endpoints %+v, want /metrics on the Service's port %q", role, sm.Spec.Endpoints, svc.Spec.Ports[0].Name)
		}
	}
}

// splitKind takes the manifests of kind out of a rendered chart.
func splitKind(out []byte, kind string) (rest []byte, docs [][]byte, err error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return rest, docs, nil
		}
		if err != nil {
			return nil, nil, err
		}
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", source(doc), err)
		}
		if meta.Kind == kind {
			docs = append(docs, doc)
			continue
		}
		rest = append(append(rest, "---\n"...), doc...)
	}
}
