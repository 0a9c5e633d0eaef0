package order

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// A batch that panics fails its placements, and the placer goes on serving:
// no later Place waits for a leader that is gone.
func TestPlacerSurvivesAPanickingBatch(t *testing.T) {
	var pl placer
	var calls int
	var mu sync.Mutex
	run := func(_ context.Context, batch []*placement) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			time.Sleep(50 * time.Millisecond) // let others queue behind this batch
			panic("boom")
		}
		for _, p := range batch {
			p.created = true
		}
	}
	ctx := context.Background()
	first := &placement{}
	done := make(chan struct{})
	go func() { pl.submit(ctx, first, run); close(done) }()
	time.Sleep(10 * time.Millisecond)
	var wg sync.WaitGroup
	others := make([]*placement, 5)
	for i := range others {
		others[i] = &placement{}
		wg.Go(func() { pl.submit(ctx, others[i], run) })
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); <-done; close(finished) }()
	select {
	case <-finished:
	case <-time.After(5 * time.Second):
		t.Fatal("placements still waiting 5s after a batch panicked")
	}
	if first.err == nil || first.created {
		t.Fatalf("the panicking batch's placement: created %v err %v, want an error", first.created, first.err)
	}
	for i, p := range others {
		if p.err != nil || !p.created {
			t.Fatalf("placement %d after the panic: created %v err %v, want created", i, p.created, p.err)
		}
	}
	late := &placement{}
	pl.submit(ctx, late, run)
	if !late.created || errors.Is(late.err, context.Canceled) {
		t.Fatalf("a later placement: created %v err %v", late.created, late.err)
	}
}
