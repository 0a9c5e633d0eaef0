package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// helmVersion is the helm the test builds when none is given: the module
// proxy serves its source, and `go install` builds it (about 3.5 minutes
// on a fresh machine with 2 cores, 2 seconds once cached).
const helmVersion = "v3.22.0"

const chartDir = "helm/converge"

var helm struct {
	once sync.Once
	path string
	err  error
}

// helmBinary returns a helm v3: $CONVERGE_TEST_HELM, else a helm v3 on the
// PATH, else one built by `go install helm.sh/helm/v3/cmd/helm@helmVersion`
// into the user's cache directory. It never skips: a test that cannot
// render the chart fails.
func helmBinary(t *testing.T) string {
	t.Helper()
	helm.once.Do(func() { helm.path, helm.err = findHelm() })
	if helm.err != nil {
		t.Fatalf("no helm to render the chart with: %v", helm.err)
	}
	return helm.path
}

func findHelm() (string, error) {
	if p := os.Getenv("CONVERGE_TEST_HELM"); p != "" {
		return p, checkHelm(p)
	}
	if p, err := exec.LookPath("helm"); err == nil && checkHelm(p) == nil {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	bin := filepath.Join(cache, "converge-test", "helm-"+helmVersion)
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no helm on the PATH and no go to build %s with: %w", helmVersion, err)
	}
	cmd := exec.Command(gobin, "install", "helm.sh/helm/v3/cmd/helm@"+helmVersion)
	// GOFLAGS of the test run (-race, -count) are not for this build.
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install helm %s: %v\n%s", helmVersion, err, out)
	}
	p := filepath.Join(bin, "helm")
	return p, checkHelm(p)
}

func checkHelm(p string) error {
	out, err := exec.Command(p, "version", "--template", "{{.Version}}").Output()
	if err != nil {
		return fmt.Errorf("%s version: %w", p, err)
	}
	if !strings.HasPrefix(string(out), "v3.") {
		return fmt.Errorf("%s is helm %s, want v3", p, out)
	}
	return nil
}

// render runs `helm template` on a copy of the chart with the given values
// files and --set pairs. The copy gets a stub charts/nats, a Chart.yaml of
// the pinned name and version only: helm refuses a chart whose dependency
// is missing from charts/ even when its condition turns it off, and the
// real one needs the network (`helm dependency build`). The test values
// turn nats off, so the stub renders nothing either way.
func render(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	bin := helmBinary(t)
	dir := filepath.Join(t.TempDir(), "converge")
	if err := os.CopyFS(dir, os.DirFS(chartDir)); err != nil {
		t.Fatal(err)
	}
	dep := natsDependency(t)
	stub := filepath.Join(dir, "charts", dep.Name)
	if err := os.MkdirAll(stub, 0o755); err != nil {
		t.Fatal(err)
	}
	meta := fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\ndescription: stub for the test\n", dep.Name, dep.Version)
	if err := os.WriteFile(filepath.Join(stub, "Chart.yaml"), []byte(meta), 0o644); err != nil {
		t.Fatal(err)
	}
	full := append([]string{"template", "converge", dir, "--namespace", "shop", "-f", "testdata/values.yaml"}, args...)
	cmd := exec.Command(bin, full...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("helm %s: %v: %s", strings.Join(full, " "), err, stderr.String())
	}
	return out, nil
}

type chartMeta struct {
	APIVersion   string `json:"apiVersion"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	AppVersion   string `json:"appVersion"`
	Dependencies []struct {
		Name       string `json:"name"`
		Version    string `json:"version"`
		Repository string `json:"repository"`
		Condition  string `json:"condition"`
	} `json:"dependencies"`
}

func natsDependency(t *testing.T) struct{ Name, Version string } {
	t.Helper()
	var c chartMeta
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &c)
	for _, d := range c.Dependencies {
		if d.Name == "nats" {
			return struct{ Name, Version string }{d.Name, d.Version}
		}
	}
	t.Fatal("Chart.yaml: no nats dependency")
	return struct{ Name, Version string }{}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// decoder decodes a manifest strictly into the typed API structs of the
// kinds the chart may render: an unknown or duplicated field, a field of
// the wrong type or another kind is an error.
var decoder = func() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme, batchv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}()

// manifests is a rendered chart, decoded.
type manifests struct {
	deployments map[string]*appsv1.Deployment // by role
	services    map[string]*corev1.Service
	pdbs        map[string]*policyv1.PodDisruptionBudget
	secrets     []*corev1.Secret
	jobs        []*batchv1.Job
}

func decodeAll(out []byte) (*manifests, error) {
	m := &manifests{
		deployments: map[string]*appsv1.Deployment{},
		services:    map[string]*corev1.Service{},
		pdbs:        map[string]*policyv1.PodDisruptionBudget{},
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var errs []error
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if isEmpty(doc) {
			continue
		}
		obj, gvk, err := decoder.Decode(doc, nil, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", source(doc), err))
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			m.deployments[o.Labels["app.kubernetes.io/component"]] = o
		case *corev1.Service:
			m.services[o.Labels["app.kubernetes.io/component"]] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs[o.Labels["app.kubernetes.io/component"]] = o
		case *corev1.Secret:
			m.secrets = append(m.secrets, o)
		case *batchv1.Job:
			m.jobs = append(m.jobs, o)
		default:
			errs = append(errs, fmt.Errorf("%s: unexpected kind %s", source(doc), gvk))
		}
	}
	return m, errors.Join(errs...)
}

func isEmpty(doc []byte) bool {
	for line := range strings.Lines(string(doc)) {
		line = strings.TrimSpace(line)
		if line != "" && line != "---" && !strings.HasPrefix(line, "#") {
			return false
		}
	}
	return true
}

// source is the "# Source: converge/templates/x.yaml" line helm writes.
func source(doc []byte) string {
	for line := range strings.Lines(string(doc)) {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "# Source: "); ok {
			return s
		}
	}
	return "a manifest"
}

// TestStrictDecodingBites proves the decoder refuses what the API server
// would: a misspelt field and a value of the wrong type.
func TestStrictDecodingBites(t *testing.T) {
	good := "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailable: 1}\n"
	if _, err := decodeAll([]byte(good)); err != nil {
		t.Fatalf("a valid manifest: %v", err)
	}
	for _, bad := range []string{
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailabel: 1}\n",
		"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
		"apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\nspec: {maxUnavailable: 1, maxUnavailable: 2}\n",
	} {
		if _, err := decodeAll([]byte(bad)); err == nil {
			t.Errorf("decoded without an error:\n%s", bad)
		}
	}
}

type roleValues struct {
	Replicas  int32                       `json:"replicas"`
	Port      int32                       `json:"port"`
	Resources corev1.ResourceRequirements `json:"resources"`
}

type chartValues struct {
	Secrets struct {
		Create bool              `json:"create"`
		Name   string            `json:"name"`
		Keys   map[string]string `json:"keys"`
	} `json:"secrets"`
	Order     roleValues `json:"order"`
	Inventory roleValues `json:"inventory"`
	Gateway   roleValues `json:"gateway"`
	LB        roleValues `json:"lb"`
	Setup     struct {
		Replicas int `json:"replicas"`
	} `json:"setup"`
	NATS struct {
		Enabled bool `json:"enabled"`
		Config  struct {
			Cluster struct {
				Enabled  bool `json:"enabled"`
				Replicas int  `json:"replicas"`
			} `json:"cluster"`
			JetStream struct {
				Enabled   bool `json:"enabled"`
				FileStore struct {
					Enabled bool `json:"enabled"`
					PVC     struct {
						Enabled bool `json:"enabled"`
					} `json:"pvc"`
				} `json:"fileStore"`
				Merge map[string]any `json:"merge"`
			} `json:"jetstream"`
		} `json:"config"`
		Container struct {
			Env map[string]corev1.EnvVar `json:"env"`
		} `json:"container"`
	} `json:"nats"`
}

func (v chartValues) role(name string) roleValues {
	return map[string]roleValues{"order": v.Order, "inventory": v.Inventory, "gateway": v.Gateway, "lb": v.LB}[name]
}

var roles = []string{"order", "inventory", "gateway", "lb"}

// TestChartMetadata checks the NATS dependency and its values: the
// official chart at a pinned version, off by a condition, a 3-node
// JetStream cluster with file storage that syncs every write.
func TestChartMetadata(t *testing.T) {
	var c chartMeta
	readYAML(t, filepath.Join(chartDir, "Chart.yaml"), &c)
	if c.APIVersion != "v2" || c.Name != "converge" || c.Version == "" || c.AppVersion == "" {
		t.Errorf("Chart.yaml: apiVersion %q name %q version %q appVersion %q", c.APIVersion, c.Name, c.Version, c.AppVersion)
	}
	if len(c.Dependencies) != 1 {
		t.Fatalf("Chart.yaml: %d dependencies, want nats only", len(c.Dependencies))
	}
	d := c.Dependencies[0]
	if d.Repository != "https://nats-io.github.io/k8s/helm/charts/" {
		t.Errorf("nats repository %q, want the official one", d.Repository)
	}
	if strings.ContainsAny(d.Version, "^~*xX<>= ") || strings.Count(d.Version, ".") != 2 {
		t.Errorf("nats version %q is not pinned", d.Version)
	}
	if d.Condition != "nats.enabled" {
		t.Errorf("nats condition %q, want nats.enabled", d.Condition)
	}

	var v chartValues
	readYAML(t, filepath.Join(chartDir, "values.yaml"), &v)
	n := v.NATS
	if !n.Enabled || !n.Config.Cluster.Enabled || n.Config.Cluster.Replicas != 3 {
		t.Errorf("nats: enabled %v, cluster %v with %d replicas; want a 3-node cluster", n.Enabled, n.Config.Cluster.Enabled, n.Config.Cluster.Replicas)
	}
	js := n.Config.JetStream
	if !js.Enabled || !js.FileStore.Enabled || !js.FileStore.PVC.Enabled {
		t.Errorf("nats: jetstream %v, file store %v, pvc %v; want all on", js.Enabled, js.FileStore.Enabled, js.FileStore.PVC.Enabled)
	}
	if js.Merge["sync_interval"] != "always" {
		t.Errorf("nats: jetstream sync_interval %v, want always (fsync every write)", js.Merge["sync_interval"])
	}
	if v.Setup.Replicas != n.Config.Cluster.Replicas {
		t.Errorf("setup.replicas %d, want one stream copy per node (%d)", v.Setup.Replicas, n.Config.Cluster.Replicas)
	}
}

// TestChartRenders renders the chart with the default values and checks
// every manifest: strict decoding into the API types, then what each role
// needs.
func TestChartRenders(t *testing.T) {
	out, err := render(t)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	var v chartValues
	readYAML(t, filepath.Join(chartDir, "values.yaml"), &v)

	if len(m.secrets) != 1 || len(m.jobs) != 1 || len(m.deployments) != 4 || len(m.services) != 4 {
		t.Fatalf("rendered %d Secrets, %d Jobs, %d Deployments, %d Services; want 1, 1, 4, 4",
			len(m.secrets), len(m.jobs), len(m.deployments), len(m.services))
	}
	secret := m.secrets[0]
	if secret.Name != v.Secrets.Name {
		t.Errorf("Secret %q, want secrets.name %q", secret.Name, v.Secrets.Name)
	}
	for _, key := range v.Secrets.Keys {
		if secret.StringData[key] == "" {
			t.Errorf("Secret: key %q is empty", key)
		}
	}

	for _, role := range roles {
		rv := v.role(role)
		d := m.deployments[role]
		if d == nil {
			t.Errorf("no Deployment for %s", role)
			continue
		}
		checkDeployment(t, d, role, rv)
		checkSecretRefs(t, role, d.Spec.Template.Spec.Containers, secret)
		checkService(t, m.services[role], d, role)
		pdb := m.pdbs[role]
		switch {
		case rv.Replicas > 1 && pdb == nil:
			t.Errorf("%s: %d replicas and no PodDisruptionBudget", role, rv.Replicas)
		case rv.Replicas <= 1 && pdb != nil:
			t.Errorf("%s: a PodDisruptionBudget for %d replica would block node drains", role, rv.Replicas)
		case pdb != nil && !selects(pdb.Spec.Selector.MatchLabels, d.Spec.Template.Labels):
			t.Errorf("%s: the PodDisruptionBudget does not select the pods", role)
		}
	}

	// The gateway reaches the services, and the lb the gateways, by their
	// Services.
	wantURL := func(from, env, to string) {
		t.Helper()
		d, s := m.deployments[from], m.services[to]
		if d == nil || s == nil {
			return
		}
		want := fmt.Sprintf("http://%s:%d", s.Name, s.Spec.Ports[0].Port)
		if got := envValue(d.Spec.Template.Spec.Containers[0], env); got != want {
			t.Errorf("%s: %s=%q, want %q", from, env, got, want)
		}
	}
	wantURL("gateway", "CONVERGE_ORDER_URL", "order")
	wantURL("gateway", "CONVERGE_INVENTORY_URL", "inventory")
	wantURL("lb", "CONVERGE_GATEWAY_URL", "gateway")
	// The gateways take both keys from the Secret.
	if d := m.deployments["gateway"]; d != nil {
		keys := map[string]string{}
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				keys[e.Name] = e.ValueFrom.SecretKeyRef.Key
			}
		}
		if keys["CONVERGE_API_KEY"] != "api-key" || keys["CONVERGE_ADMIN_KEY"] != "admin-key" {
			t.Errorf("gateway: keys from the Secret %v, want CONVERGE_API_KEY from api-key and CONVERGE_ADMIN_KEY from admin-key", keys)
		}
	}

	job := m.jobs[0]
	hooks := strings.Split(job.Annotations["helm.sh/hook"], ",")
	if !slices.Contains(hooks, "post-install") || !slices.Contains(hooks, "post-upgrade") {
		t.Errorf("setup Job hooks %q, want post-install and post-upgrade", hooks)
	}
	jc := job.Spec.Template.Spec.Containers
	if len(jc) != 1 || !slices.Equal(jc[0].Args, []string{"setup"}) {
		t.Fatalf("setup Job containers: %+v", jc)
	}
	if got := envValue(jc[0], "CONVERGE_REPLICAS"); got != fmt.Sprint(v.Setup.Replicas) {
		t.Errorf("setup: CONVERGE_REPLICAS=%q, want %d", got, v.Setup.Replicas)
	}
	if rp := job.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
		t.Errorf("setup: restartPolicy %q", rp)
	}
	checkNonRoot(t, "setup", job.Spec.Template.Spec.SecurityContext, jc[0].SecurityContext)
	checkSecretRefs(t, "setup", jc, secret)
	if jc[0].Resources.Limits.Memory().IsZero() {
		t.Error("setup: no memory limit")
	}

	// The nats subchart reads the broker password from the same Secret.
	if e, ok := v.NATS.Container.Env["NATS_PASSWORD"]; ok && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
		ref := e.ValueFrom.SecretKeyRef
		if ref.Name != secret.Name || ref.Key != v.Secrets.Keys["natsPassword"] {
			t.Errorf("nats.container.env.NATS_PASSWORD reads %s/%s, want %s/%s", ref.Name, ref.Key, secret.Name, v.Secrets.Keys["natsPassword"])
		}
	}

	checkKnownVariables(t, "chart", chartVariables(m))
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, role string, rv roleValues) {
	t.Helper()
	if d.Spec.Replicas == nil || *d.Spec.Replicas != rv.Replicas {
		t.Errorf("%s: replicas %v, want %d from values", role, d.Spec.Replicas, rv.Replicas)
	}
	if d.Spec.Selector == nil || !selects(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
		t.Errorf("%s: the selector does not select the pod template", role)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", role, len(pod.Containers))
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{role}) {
		t.Errorf("%s: args %q, want [%s]", role, c.Args, role)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != rv.Port {
		t.Errorf("%s: ports %+v, want http on %d", role, c.Ports, rv.Port)
	}
	if got, want := envValue(c, "CONVERGE_ADDR"), fmt.Sprintf("0.0.0.0:%d", rv.Port); got != want {
		t.Errorf("%s: CONVERGE_ADDR=%q, want %q (the probes come from outside the pod)", role, got, want)
	}
	checkProbe(t, role, "liveness", c.LivenessProbe, "/healthz")
	checkProbe(t, role, "readiness", c.ReadinessProbe, "/readyz")
	r := c.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("%s: resources %+v, want cpu and memory requests and a memory limit", role, r)
	}
	if !r.Requests.Memory().Equal(*rv.Resources.Requests.Memory()) || !r.Limits.Memory().Equal(*rv.Resources.Limits.Memory()) {
		t.Errorf("%s: resources %+v, not those of values.yaml %+v", role, r, rv.Resources)
	}
	checkNonRoot(t, role, pod.SecurityContext, c.SecurityContext)
	if c.SecurityContext != nil && c.SecurityContext.ReadOnlyRootFilesystem != nil && *c.SecurityContext.ReadOnlyRootFilesystem {
		if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" }) {
			t.Errorf("%s: a read-only root file system and no /tmp", role)
		}
	}
	// A Prometheus that discovers pods by annotation finds /metrics.
	a := d.Spec.Template.Annotations
	if port := fmt.Sprint(rv.Port); a["prometheus.io/scrape"] != "true" || a["prometheus.io/port"] != port || a["prometheus.io/path"] != "/metrics" {
		t.Errorf("%s: pod annotations %v, want prometheus.io/scrape true, port %s, path /metrics", role, a, port)
	}
}

func checkProbe(t *testing.T, role, kind string, p *corev1.Probe, path string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: no %s HTTP probe", role, kind)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "http" {
		t.Errorf("%s: %s probe on %s port %s, want %s on http", role, kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
	}
}

func checkNonRoot(t *testing.T, role string, pod *corev1.PodSecurityContext, c *corev1.SecurityContext) {
	t.Helper()
	if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser == 0 {
		t.Errorf("%s: the pod does not run as a numeric non-root user: %+v", role, pod)
	}
	if c == nil || c.RunAsNonRoot == nil || !*c.RunAsNonRoot ||
		c.AllowPrivilegeEscalation == nil || *c.AllowPrivilegeEscalation ||
		c.Capabilities == nil || !slices.Contains(c.Capabilities.Drop, "ALL") {
		t.Errorf("%s: container securityContext %+v, want runAsNonRoot, no privilege escalation, all capabilities dropped", role, c)
	}
}

func checkService(t *testing.T, s *corev1.Service, d *appsv1.Deployment, role string) {
	t.Helper()
	if s == nil {
		t.Errorf("no Service for %s", role)
		return
	}
	if !selects(s.Spec.Selector, d.Spec.Template.Labels) {
		t.Errorf("%s: the Service does not select the pods", role)
	}
	if len(s.Spec.Ports) != 1 || s.Spec.Ports[0].TargetPort.String() != d.Spec.Template.Spec.Containers[0].Ports[0].Name {
		t.Errorf("%s: Service ports %+v do not target the container port", role, s.Spec.Ports)
	}
}

// checkSecretRefs checks that every secretKeyRef names the rendered Secret
// and one of its keys.
func checkSecretRefs(t *testing.T, role string, cs []corev1.Container, secret *corev1.Secret) {
	t.Helper()
	for _, c := range cs {
		for _, e := range c.Env {
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				continue
			}
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != secret.Name || secret.StringData[ref.Key] == "" {
				t.Errorf("%s: %s reads %s/%s, which the Secret %s does not have", role, e.Name, ref.Name, ref.Key, secret.Name)
			}
		}
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func envValue(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// chartVariables is every environment variable the chart sets, by role.
func chartVariables(m *manifests) map[string][]string {
	vars := map[string][]string{}
	add := func(role string, cs []corev1.Container) {
		for _, c := range cs {
			for _, e := range c.Env {
				vars[role] = append(vars[role], e.Name)
			}
		}
	}
	for role, d := range m.deployments {
		add(role, d.Spec.Template.Spec.Containers)
	}
	for _, j := range m.jobs {
		add("setup", j.Spec.Template.Spec.Containers)
	}
	return vars
}

// TestChartValues renders with other values and checks they are followed:
// replica counts, a budget for the lb once it has two pods, an existing
// Secret instead of one from the chart, and a refusal without secrets.
func TestChartValues(t *testing.T) {
	out, err := render(t, "--set", "order.replicas=5,inventory.replicas=3,gateway.replicas=4,lb.replicas=2",
		"--set", "secrets.create=false,secrets.name=shop-credentials", "--set", "redis.url=")
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeAll(out)
	if err != nil {
		t.Fatal(err)
	}
	for role, want := range map[string]int32{"order": 5, "inventory": 3, "gateway": 4, "lb": 2} {
		d := m.deployments[role]
		if d == nil || d.Spec.Replicas == nil || *d.Spec.Replicas != want {
			t.Errorf("%s: replicas not %d", role, want)
		}
		if m.pdbs[role] == nil {
			t.Errorf("%s: %d replicas and no PodDisruptionBudget", role, want)
		}
		if d == nil {
			continue
		}
		c := d.Spec.Template.Spec.Containers[0]
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "shop-credentials" {
				t.Errorf("%s: %s reads the Secret %s, want shop-credentials", role, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		if (role == "order" || role == "inventory") && envValue(c, "CONVERGE_CACHE") != "memory" {
			t.Errorf("%s: CONVERGE_CACHE=%q without redis.url, want memory", role, envValue(c, "CONVERGE_CACHE"))
		}
	}
	if len(m.secrets) != 0 {
		t.Errorf("secrets.create=false rendered %d Secrets", len(m.secrets))
	}

	_, err = render(t, "--set", "secrets.apiKey=")
	if err == nil || !strings.Contains(err.Error(), "secrets.apiKey is required") {
		t.Errorf("rendering without an API key: %v, want it refused", err)
	}
	_, err = render(t, "--set", "secrets.adminKey=")
	if err == nil || !strings.Contains(err.Error(), "secrets.adminKey is required") {
		t.Errorf("rendering without an admin key: %v, want it refused", err)
	}
}
