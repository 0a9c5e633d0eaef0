package lb

import (
	"slices"
	"testing"
)

func TestPolicy(t *testing.T) {
	type be struct {
		healthy  bool
		inflight int64
	}
	up := func(inflight int64) be { return be{healthy: true, inflight: inflight} }
	down := be{}

	tests := []struct {
		name        string
		leastLoaded bool
		backends    []be
		skip        []bool
		// want is the index acquire returns on successive calls; each
		// call adds one in-flight request to the backend it picks.
		want []int
	}{
		{"least-loaded picks fewest in flight", true, []be{up(3), up(1), up(2)}, nil, []int{1, 2, 1, 2}},
		{"least-loaded spreads ties", true, []be{up(0), up(0), up(0)}, nil, []int{0, 1, 2, 0, 1, 2}},
		{"least-loaded skips unhealthy", true, []be{down, up(5), down}, nil, []int{1, 1, 1}},
		{"least-loaded skips tried", true, []be{up(0), up(9)}, []bool{true, false}, []int{1, 1}},
		{"round-robin rotates", false, []be{up(7), up(0), up(3)}, nil, []int{0, 1, 2, 0, 1}},
		{"round-robin skips unhealthy", false, []be{up(0), down, up(0)}, nil, []int{0, 2, 0, 2}},
		{"round-robin skips tried", false, []be{up(0), up(0), up(0)}, []bool{false, true, false}, []int{0, 2, 0}},
		{"none healthy", true, []be{down, down}, nil, []int{-1, -1}},
		{"none healthy round-robin", false, []be{down}, nil, []int{-1}},
		{"all healthy ones tried", false, []be{up(0), down}, []bool{true, false}, []int{-1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bs []*backend
			for _, b := range tt.backends {
				x := &backend{}
				x.healthy.Store(b.healthy)
				x.inflight.Store(b.inflight)
				bs = append(bs, x)
			}
			p := &policy{leastLoaded: tt.leastLoaded}
			var got []int
			for range tt.want {
				got = append(got, p.acquire(bs, tt.skip))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("picks = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPolicyCountsInFlight(t *testing.T) {
	bs := []*backend{{}, {}}
	for _, b := range bs {
		b.healthy.Store(true)
	}
	p := &policy{leastLoaded: true}
	for range 4 {
		p.acquire(bs, nil)
	}
	if got0, got1 := bs[0].inflight.Load(), bs[1].inflight.Load(); got0 != 2 || got1 != 2 {
		t.Errorf("in flight after 4 picks = %d, %d, want 2, 2", got0, got1)
	}
}
