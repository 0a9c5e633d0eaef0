package cluster

import (
	"net"
	"slices"
	"strconv"
	"testing"
)

// One start hands a port out once: freePorts skips what it gave before,
// even though that port is still free until its process binds it.
func TestFreePortsNeverRepeat(t *testing.T) {
	low, high := listenRange()
	var left []int
	given := map[int]bool{}
	for p := low; p < high; p++ {
		given[p] = true
	}
	// Leave three ports that are free now.
	for p := low; p < high && len(left) < 3; p += 97 {
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		delete(given, p)
		left = append(left, p)
	}
	got, err := freePorts(given, 3)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, left) {
		t.Fatalf("freePorts = %v, want the only ports not given yet: %v", got, left)
	}
	for _, p := range got {
		if !given[p] {
			t.Errorf("port %d handed out but not recorded as given", p)
		}
	}
	if _, err := freePorts(given, 1); err == nil {
		t.Error("freePorts found a port when every one of the range was given")
	}
}
