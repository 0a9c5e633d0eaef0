package lb

import "sync"

// Policy names accepted in Config.Policy.
const (
	policyLeastLoaded = "least-loaded"
	policyRoundRobin  = "round-robin"
)

// policy chooses the backend for the next request among the healthy ones.
//
// The choice and the in-flight increment happen under one lock: a burst of
// requests arriving together must see each other's picks, or least-loaded
// would send the whole burst to the same idle backend.
type policy struct {
	leastLoaded bool

	mu sync.Mutex
	// next is where the next scan starts. It moves past every pick, so
	// round-robin rotates and least-loaded breaks ties by rotating too,
	// instead of always favouring the first backend in the list.
	next int
}

// acquire picks a healthy backend not marked in skip (skip may be nil),
// counts one more request in flight on it and returns its index. It returns
// -1 when no backend qualifies.
func (p *policy) acquire(bs []*backend, skip []bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(bs)
	chosen := -1
	for k := range n {
		i := (p.next + k) % n
		if !bs[i].healthy.Load() || (skip != nil && skip[i]) {
			continue
		}
		if !p.leastLoaded {
			chosen = i
			break
		}
		if chosen < 0 || bs[i].inflight.Load() < bs[chosen].inflight.Load() {
			chosen = i
		}
	}
	if chosen < 0 {
		return -1
	}
	bs[chosen].inflight.Add(1)
	p.next = (chosen + 1) % n
	return chosen
}
