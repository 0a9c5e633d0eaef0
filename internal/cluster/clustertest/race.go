//go:build race

package clustertest

const race = true
