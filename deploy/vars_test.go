package deploy

import (
	"flag"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/role"
)

// knownVariables is what each converge subcommand reads, written out here
// as well as taken from the code and the README, so that the check works
// while some of the roles are still being added to the binary. Every flag
// --x-y has the twin CONVERGE_X_Y.
var knownVariables = func() map[string][]string {
	nats := []string{"nats", "nats-user", "nats-password", "nats-token", "nats-creds", "nats-ca", "nats-cert", "nats-key"}
	service := append([]string{"addr", "cache", "cache-ttl", "instance", "relay-lease", "log-level"}, nats...)
	flags := map[string][]string{
		"order":     append([]string{"order-db"}, service...),
		"inventory": append([]string{"inventory-db", "seed"}, service...),
		"gateway":   {"addr", "api-key", "admin-key", "order-url", "inventory-url", "log-level"},
		"lb":        {"addr", "gateway-url", "lb-policy", "log-level"},
		"broker": {"data", "host", "port", "name", "cluster-name", "cluster-port", "routes",
			"user", "password", "route-user", "route-password", "sync", "metrics-addr", "log-level"},
		"setup": append([]string{"replicas", "log-level"}, nats...),
	}
	vars := map[string][]string{}
	for r, fs := range flags {
		for _, f := range fs {
			vars[r] = append(vars[r], envTwin(f))
		}
	}
	return vars
}()

func envTwin(flag string) string {
	return "CONVERGE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// registeredVariables are the twins of the flags the roles' config structs
// register.
func registeredVariables() map[string][]string {
	regs := map[string]func(*flag.FlagSet){
		"order":     (&role.OrderConfig{}).Register,
		"inventory": (&role.InventoryConfig{}).Register,
		"gateway":   (&role.GatewayConfig{}).Register,
		"lb":        (&role.LBConfig{}).Register,
	}
	vars := map[string][]string{}
	for r, register := range regs {
		fs := flag.NewFlagSet(r, flag.ContinueOnError)
		register(fs)
		fs.VisitAll(func(f *flag.Flag) { vars[r] = append(vars[r], envTwin(f.Name)) })
	}
	return vars
}

// readmeRow is a row of the README's configuration tables:
// | `--order-db` | `CONVERGE_ORDER_DB` | ...
var readmeRow = regexp.MustCompile("(?m)^\\|\\s*`--([a-z0-9-]+)`\\s*\\|\\s*`(CONVERGE_[A-Z0-9_]+)`\\s*\\|")

// readmeVariables are the variables of the README's configuration tables.
// The tables do not say which role reads each, so they count for all.
func readmeVariables(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var vars []string
	for _, m := range readmeRow.FindAllStringSubmatch(string(b), -1) {
		if envTwin(m[1]) != m[2] {
			t.Errorf("README.md: --%s has the twin %s, want %s", m[1], m[2], envTwin(m[1]))
		}
		vars = append(vars, m[2])
	}
	return vars
}

func TestReadmeTableIsRead(t *testing.T) {
	if len(readmeVariables(t)) == 0 {
		t.Error("README.md: no configuration table rows found; the pattern no longer matches the table")
	}
}

// checkKnownVariables fails naming every CONVERGE_* variable in vars (by
// role) that the role does not read.
func checkKnownVariables(t *testing.T, source string, vars map[string][]string) {
	t.Helper()
	n := 0
	for _, vs := range vars {
		for _, v := range vs {
			if strings.HasPrefix(v, "CONVERGE_") {
				n++
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no CONVERGE_* variables found; the check would pass vacuously", source)
	}
	unknown := unknownVariables(vars, readmeVariables(t), registeredVariables())
	for _, r := range slices.Sorted(maps.Keys(unknown)) {
		t.Errorf("%s: %s sets variables converge does not read: %s", source, r, strings.Join(unknown[r], ", "))
	}
}

// unknownVariables returns, by role, the CONVERGE_* variables of vars that
// the role does not read: not in knownVariables, not registered by the
// role's config, not in the README's tables. A role converge does not
// have is reported with its variables.
func unknownVariables(vars map[string][]string, readme []string, registered map[string][]string) map[string][]string {
	out := map[string][]string{}
	for r, vs := range vars {
		known, ok := knownVariables[r]
		for _, v := range vs {
			if !strings.HasPrefix(v, "CONVERGE_") {
				continue
			}
			if !ok || !slices.Contains(known, v) && !slices.Contains(registered[r], v) && !slices.Contains(readme, v) {
				out[r] = append(out[r], v)
			}
		}
		if len(out[r]) > 0 {
			slices.Sort(out[r])
			out[r] = slices.Compact(out[r])
		}
	}
	return out
}

// TestUnknownVariableFails proves the check bites: a misspelt variable, a
// variable of another role and a role converge does not have.
func TestUnknownVariableFails(t *testing.T) {
	vars := map[string][]string{
		"gateway": {"CONVERGE_API_KEY", "CONVERGE_ORDER_URLS", "CONVERGE_ORDER_DB", "PATH"},
		"order":   {"CONVERGE_ORDER_DB", "CONVERGE_INSTANCE"},
		"cron":    {"CONVERGE_ADDR"},
	}
	got := unknownVariables(vars, []string{"CONVERGE_GATEWAYS"}, registeredVariables())
	want := map[string][]string{"gateway": {"CONVERGE_ORDER_DB", "CONVERGE_ORDER_URLS"}, "cron": {"CONVERGE_ADDR"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("unknown variables %v, want %v", got, want)
	}
}
