package bench

import (
	"testing"
	"time"
)

func TestCPUFromProcStat(t *testing.T) {
	at := time.Unix(1000, 0)
	// user nice system idle iowait irq softirq steal guest guest_nice
	first, err := parseProcStat([]byte("cpu  100 0 50 750 50 0 0 50 30 0\ncpu0 50 0 25 400 25 0 0 0 15 0\ncpu1 50 0 25 400 25 0 0 0 15 0\nintr 1 2 3\nctxt 5000\n"), at)
	if err != nil {
		t.Fatal(err)
	}
	if first.busy != 150 || first.all != 1000 || first.cores != 2 || first.switches != 5000 {
		t.Fatalf("parsed busy %d, all %d, cores %d, switches %d; want 150, 1000, 2, 5000 (guest counted in user; idle, iowait and steal not busy)", first.busy, first.all, first.cores, first.switches)
	}
	// 2 s later on 2 cores: 400 ticks, 300 of them busy; 1,500 switches.
	second, err := parseProcStat([]byte("cpu  350 0 100 850 100 0 0 0 0 0\ncpu0 1\ncpu1 1\nctxt 6500\n"), at.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := first.since(second, 100)
	want := CPU{Busy: 0.75, Cores: 2, PerUnit: 30 * time.Millisecond, SwitchesPerUnit: 15} // 0.75 x 2 s x 2 cores / 100; 1,500 / 100
	if got != want {
		t.Errorf("since = %+v, want %+v", got, want)
	}
	if got := first.since(second, 0); got.PerUnit != 0 || got.Busy != 0.75 {
		t.Errorf("since with no units = %+v, want busy 0.75 and no per-unit figure", got)
	}
	noSwitches := first
	noSwitches.switches = 0 // a /proc/stat without a ctxt line
	if got := noSwitches.since(second, 100); got.SwitchesPerUnit != 0 || got.PerUnit != 30*time.Millisecond {
		t.Errorf("since without a first count of switches = %+v, want the CPU and no switches per unit", got)
	}
	fewer := second
	fewer.switches = 4000 // below the first count: no figure rather than a wrapped one
	if got := first.since(fewer, 100); got.SwitchesPerUnit != 0 || got.PerUnit != 30*time.Millisecond {
		t.Errorf("since with a smaller count of switches = %+v, want the CPU and no switches per unit", got)
	}
	if got := (cpuSample{unsupported: true}).since(second, 100); got != (CPU{}) {
		t.Errorf("since without /proc/stat = %+v, want zero", got)
	}
	for _, bad := range []string{"", "cpu 1 2\ncpu0 1\n", "cpu a b c d e\ncpu0 1\n", "cpu 1 2 3 4 5\n", "cpu 1 2 3 4 5\ncpu0 1\nctxt x\n"} {
		if _, err := parseProcStat([]byte(bad), at); err == nil {
			t.Errorf("parseProcStat(%q) = nil error, want one", bad)
		}
	}
}
