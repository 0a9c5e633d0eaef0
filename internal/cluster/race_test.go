//go:build race

package cluster_test

// race is set when the tests run with -race; the binary they start is then
// built with -race too, which reuses the packages the test build compiled.
const race = true
