package bench

import (
	"slices"
	"testing"
	"time"
)

func TestStatTicks(t *testing.T) {
	// pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
	// majflt cmajflt utime stime cutime cstime ...; the command name may
	// hold spaces and parentheses.
	line := "4242 (nats (srv) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 8 9 20 0 12 0 100 1000 200\n"
	got, err := statTicks([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got != 1234+567 {
		t.Errorf("statTicks = %d, want utime + stime = %d (children's time left out)", got, 1234+567)
	}
	for _, bad := range []string{"4242 S 1 2 3", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 12a4 567 8"} {
		if _, err := statTicks([]byte(bad)); err == nil {
			t.Errorf("statTicks(%q): got no error", bad)
		}
	}
}

func TestPartsSince(t *testing.T) {
	before := partsSample{
		partOrders:   {10: 100, 11: 200},
		partPostgres: {20: 50, 21: 70},
	}
	after := partsSample{
		partOrders:   {10: 300, 11: 250}, // 200 + 50 ticks
		partPostgres: {20: 150, 22: 30},  // 100, 21 exited (lost), 22 new: 30 whole
		partBrokers:  {30: 40},           // started meanwhile
	}
	// 100 orders; 1 tick is 10 ms.
	got := before.since(after, 100, 50*time.Millisecond)
	want := map[string]time.Duration{
		partOrders:   25 * time.Millisecond, // 250 ticks = 2.5 s, / 100
		partPostgres: 13 * time.Millisecond, // 130 ticks
		partBrokers:  4 * time.Millisecond,
		partClient:   0,
		// the machine's 50 ms less the parts' 42 ms
		restOfMachine: 8 * time.Millisecond,
	}
	wantProcs := map[string]int{partOrders: 2, partPostgres: 2, partBrokers: 1, partRedis: 0}
	var names []string
	for _, p := range got {
		names = append(names, p.Part)
		if w, ok := want[p.Part]; ok && p.PerUnit != w {
			t.Errorf("%s: %s per order, want %s", p.Part, p.PerUnit, w)
		}
		if w, ok := wantProcs[p.Part]; ok && p.Processes != w {
			t.Errorf("%s: %d processes, want %d", p.Part, p.Processes, w)
		}
	}
	if !slices.Equal(names, partNames()) {
		t.Errorf("parts %q, want %q in that order", names, partNames())
	}
	// The parts can add up to a little more than the machine's figure
	// (their samples span a few more milliseconds): never a negative rest.
	less := before.since(after, 100, 10*time.Millisecond)
	if rest := less[len(less)-1]; rest.Part != restOfMachine || rest.PerUnit != 0 {
		t.Errorf("rest of the machine = %+v, want 0", rest)
	}
	if got := before.since(nil, 100, time.Millisecond); got != nil {
		t.Errorf("since a missing sample = %v, want nil", got)
	}
}
