//go:build !race

package cluster_test

const race = false
