package deploy

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"testing"
)

type composeFile struct {
	Name     string                    `json:"name"`
	Services map[string]composeService `json:"services"`
	Volumes  map[string]any            `json:"volumes"`
}

type composeService struct {
	Image       string            `json:"image"`
	Build       any               `json:"build"`
	Command     []string          `json:"command"`
	Restart     string            `json:"restart"`
	Environment map[string]string `json:"environment"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
	DependsOn map[string]struct {
		Condition string `json:"condition"`
	} `json:"depends_on"`
	Ports   []string `json:"ports"`
	Volumes []string `json:"volumes"`
}

// role is the converge subcommand a service runs, or its name for the
// other images (postgres, redis).
func (s composeService) role(name string) string {
	if s.Build != nil && len(s.Command) > 0 {
		return s.Command[0]
	}
	return name
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, "compose.yaml", &c)
	if len(c.Services) == 0 {
		t.Fatal("compose.yaml: no services")
	}
	return c
}

// TestCompose checks the topology of compose.yaml: every role with its
// count, health checks on every long-running service, start order by
// conditions, one cluster of three authenticated brokers with their own
// volumes, and addresses that agree with each other.
func TestCompose(t *testing.T) {
	c := loadCompose(t)
	byRole := map[string][]string{}
	for _, name := range slices.Sorted(maps.Keys(c.Services)) {
		s := c.Services[name]
		if s.Image == "" && s.Build == nil {
			t.Errorf("%s: neither image nor build", name)
		}
		byRole[s.role(name)] = append(byRole[s.role(name)], name)
		for dep, cond := range s.DependsOn {
			target, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on %s, which is not a service", name, dep)
			case cond.Condition == "service_healthy" && target.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			case cond.Condition == "":
				t.Errorf("%s depends on %s without a condition", name, dep)
			}
		}
		if s.role(name) == "setup" {
			continue
		}
		if s.Healthcheck == nil || len(s.Healthcheck.Test) < 2 {
			t.Errorf("%s: no healthcheck", name)
		}
	}
	want := map[string]int{"postgres": 1, "redis": 1, "broker": 3, "setup": 1, "order": 2, "inventory": 2, "gateway": 2, "lb": 1,
		"prometheus": 1, "grafana": 1}
	for role, n := range want {
		if len(byRole[role]) != n {
			t.Errorf("%d %s services (%v), want %d", len(byRole[role]), role, byRole[role], n)
		}
	}
	for role := range byRole {
		if _, ok := want[role]; !ok {
			t.Errorf("unexpected service role %q: %v", role, byRole[role])
		}
	}
	env := func(name, key string) string { return c.Services[name].Environment[key] }

	// The broker cluster: distinct names and volumes, every node routed to
	// every other, clients and nodes agreeing on the credentials.
	brokers := byRole["broker"]
	names, vols := map[string]bool{}, map[string]bool{}
	for _, b := range brokers {
		s := c.Services[b]
		names[env(b, "CONVERGE_NAME")] = true
		for _, v := range s.Volumes {
			vol, path, _ := strings.Cut(v, ":")
			if path == env(b, "CONVERGE_DATA") && c.Volumes != nil {
				if _, ok := c.Volumes[vol]; ok {
					vols[vol] = true
				}
			}
		}
		for _, other := range brokers {
			if !strings.Contains(env(b, "CONVERGE_ROUTES"), fmt.Sprintf("nats-route://%s:%s", other, env(b, "CONVERGE_CLUSTER_PORT"))) {
				t.Errorf("%s: CONVERGE_ROUTES=%q does not route to %s", b, env(b, "CONVERGE_ROUTES"), other)
			}
		}
		if env(b, "CONVERGE_CLUSTER_NAME") == "" || env(b, "CONVERGE_CLUSTER_NAME") != env(brokers[0], "CONVERGE_CLUSTER_NAME") {
			t.Errorf("%s: cluster name %q", b, env(b, "CONVERGE_CLUSTER_NAME"))
		}
		if env(b, "CONVERGE_USER") == "" || env(b, "CONVERGE_PASSWORD") == "" || env(b, "CONVERGE_ROUTE_USER") == "" || env(b, "CONVERGE_ROUTE_PASSWORD") == "" {
			t.Errorf("%s: clients and routes are not both authenticated", b)
		}
		if env(b, "CONVERGE_HOST") != "0.0.0.0" {
			t.Errorf("%s: CONVERGE_HOST=%q, want 0.0.0.0 (reached from other containers)", b, env(b, "CONVERGE_HOST"))
		}
		if env(b, "CONVERGE_SYNC") == "false" {
			t.Errorf("%s: fsync off", b)
		}
	}
	if len(names) != len(brokers) || names[""] {
		t.Errorf("broker names %v: want one distinct name per node", names)
	}
	if len(vols) != len(brokers) {
		t.Errorf("broker volumes %v: want a named volume on CONVERGE_DATA per node", vols)
	}

	// Every client of the broker knows every node and the credentials.
	for _, role := range []string{"setup", "order", "inventory"} {
		for _, s := range byRole[role] {
			for _, b := range brokers {
				if !strings.Contains(env(s, "CONVERGE_NATS"), "nats://"+b+":"+env(b, "CONVERGE_PORT")) {
					t.Errorf("%s: CONVERGE_NATS=%q does not list %s", s, env(s, "CONVERGE_NATS"), b)
				}
			}
			if env(s, "CONVERGE_NATS_USER") != env(brokers[0], "CONVERGE_USER") || env(s, "CONVERGE_NATS_PASSWORD") != env(brokers[0], "CONVERGE_PASSWORD") {
				t.Errorf("%s: NATS credentials differ from the brokers'", s)
			}
		}
	}
	setup := byRole["setup"]
	if len(setup) == 1 {
		s := setup[0]
		if env(s, "CONVERGE_REPLICAS") != "3" {
			t.Errorf("%s: CONVERGE_REPLICAS=%q, want 3", s, env(s, "CONVERGE_REPLICAS"))
		}
		for _, b := range brokers {
			if c.Services[s].DependsOn[b].Condition != "service_healthy" {
				t.Errorf("%s does not wait for %s to be healthy", s, b)
			}
		}
		for _, role := range []string{"order", "inventory"} {
			for _, name := range byRole[role] {
				if c.Services[name].DependsOn[s].Condition != "service_completed_successfully" {
					t.Errorf("%s does not wait for %s to complete", name, s)
				}
			}
		}
	}

	// The services: their databases, caches, distinct instance names, and
	// a health check on the port they listen on.
	instances := map[string]bool{}
	for _, role := range []string{"order", "inventory"} {
		for _, s := range byRole[role] {
			db := env(s, "CONVERGE_"+strings.ToUpper(role)+"_DB")
			if !strings.HasPrefix(db, "postgres://") || !strings.Contains(db, "@postgres:5432/") {
				t.Errorf("%s: database %q, want the postgres service", s, db)
			}
			if !strings.HasPrefix(env(s, "CONVERGE_CACHE"), "redis://redis:6379/") {
				t.Errorf("%s: cache %q, want the redis service", s, env(s, "CONVERGE_CACHE"))
			}
			for _, d := range []string{"postgres", "redis"} {
				if c.Services[s].DependsOn[d].Condition != "service_healthy" {
					t.Errorf("%s does not wait for %s to be healthy", s, d)
				}
			}
			instances[env(s, "CONVERGE_INSTANCE")] = true
		}
	}
	if len(instances) != len(byRole["order"])+len(byRole["inventory"]) || instances[""] {
		t.Errorf("instance names %v: want one distinct name per service instance", instances)
	}
	for _, role := range []string{"order", "inventory", "gateway", "lb"} {
		for _, s := range byRole[role] {
			addr := env(s, "CONVERGE_ADDR")
			host, port, ok := strings.Cut(addr, ":")
			if !ok || host != "0.0.0.0" {
				t.Errorf("%s: CONVERGE_ADDR=%q, want 0.0.0.0:PORT", s, addr)
				continue
			}
			want := []string{"CMD", "/converge", "probe", "--url", "http://127.0.0.1:" + port + "/readyz"}
			if hc := c.Services[s].Healthcheck; hc == nil || !slices.Equal(hc.Test, want) {
				t.Errorf("%s: healthcheck %v, want %q", s, hc, want)
			}
		}
	}

	// Each tier lists every instance of the next.
	lists := func(from, key, to string) {
		t.Helper()
		for _, s := range byRole[from] {
			for _, target := range byRole[to] {
				_, port, _ := strings.Cut(env(target, "CONVERGE_ADDR"), ":")
				if !slices.Contains(strings.Split(env(s, key), ","), "http://"+target+":"+port) {
					t.Errorf("%s: %s=%q does not list %s", s, key, env(s, key), target)
				}
			}
		}
	}
	lists("gateway", "CONVERGE_ORDER_URL", "order")
	lists("gateway", "CONVERGE_INVENTORY_URL", "inventory")
	lists("lb", "CONVERGE_GATEWAY_URL", "gateway")

	// Only the load balancer is published; Prometheus and Grafana on the
	// host's loopback only.
	for name, s := range c.Services {
		switch s.role(name) {
		case "lb":
			if !slices.Contains(s.Ports, "8080:8080") {
				t.Errorf("%s: ports %v, want 8080:8080", name, s.Ports)
			}
		case "prometheus", "grafana":
			for _, p := range s.Ports {
				if !strings.HasPrefix(p, "127.0.0.1:") {
					t.Errorf("%s publishes %s beyond the host's loopback", name, p)
				}
			}
		default:
			if len(s.Ports) > 0 {
				t.Errorf("%s publishes %v; only the load balancer should", name, s.Ports)
			}
		}
	}
}

// TestComposeSecretsArePlaceholders checks that every secret in
// compose.yaml is a visible placeholder that the environment can replace,
// never a value that looks real.
func TestComposeSecretsArePlaceholders(t *testing.T) {
	c := loadCompose(t)
	n := 0
	for name, s := range c.Services {
		for k, v := range s.Environment {
			secret := strings.Contains(k, "PASSWORD") || strings.HasSuffix(k, "_KEY") || strings.Contains(k, "TOKEN")
			if strings.HasSuffix(k, "_DB") {
				u, err := url.Parse(strings.NewReplacer("${", "", "}", "", ":-", "-").Replace(v))
				if err == nil && u.User != nil {
					if _, ok := u.User.Password(); ok {
						secret = true
					}
				}
			}
			if !secret {
				continue
			}
			n++
			if !strings.Contains(v, "${DEPLOY_") || !strings.Contains(v, "CHANGE-ME") {
				t.Errorf("%s: %s=%q, want ${DEPLOY_...:-CHANGE-ME-...}", name, k, v)
			}
		}
	}
	if n == 0 {
		t.Error("no secrets found in compose.yaml; the check would pass vacuously")
	}
}

// TestComposeVariables checks that every CONVERGE_* variable compose.yaml
// sets is one converge reads.
func TestComposeVariables(t *testing.T) {
	c := loadCompose(t)
	vars := map[string][]string{}
	for name, s := range c.Services {
		if s.Build == nil {
			continue
		}
		vars[s.role(name)] = append(vars[s.role(name)], slices.Collect(maps.Keys(s.Environment))...)
	}
	checkKnownVariables(t, "compose.yaml", vars)
}
