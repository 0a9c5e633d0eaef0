// Package deploy holds no code: its test checks the deployment files beside
// it (compose.yaml and the Helm chart in helm/converge) without a container
// engine or a cluster. The test renders the chart with helm, decodes every
// manifest strictly into the Kubernetes API types, checks the compose
// topology, and checks that every CONVERGE_* variable the files set is one
// that converge reads, that Prometheus scrapes every process, and that the
// Grafana dashboard queries only metrics the roles serve.
package deploy
