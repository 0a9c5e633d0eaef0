package bench_test

import (
	"strings"
	"testing"

	"github.com/convergehq/converge/internal/bench"
)

func TestFiguresAreMediansOverRounds(t *testing.T) {
	round := func(bare, real float64) bench.Round {
		return bench.Round{Bare: bench.Flow{Rate: bare}, Real: bench.Flow{Rate: real}, Ratio: real / bare}
	}
	for _, tt := range []struct {
		name                    string
		rounds                  []bench.Round
		median, lowest, highest float64
	}{
		{"odd", []bench.Round{round(1000, 300), round(1000, 100), round(1000, 200)}, 200, 100, 300},
		{"even", []bench.Round{round(1000, 300), round(1000, 100)}, 200, 100, 300},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res := bench.Result{Topology: "embedded", Rounds: tt.rounds}
			var got *bench.Figure
			for _, f := range res.Figures() {
				if f.What == "converge embedded" {
					got = &f
				}
			}
			if got == nil {
				t.Fatalf("no figure for converge embedded in %+v", res.Figures())
			}
			if got.Median != tt.median || got.Min != tt.lowest || got.Max != tt.highest || got.Unit != "orders/s" {
				t.Errorf("got median %g, min %g, max %g %s; want %g, %g, %g orders/s", got.Median, got.Min, got.Max, got.Unit, tt.median, tt.lowest, tt.highest)
			}
			var out strings.Builder
			if err := res.Print(&out); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "ratio converge / bare chain") {
				t.Errorf("summary has no ratio:\n%s", out.String())
			}
		})
	}
}
