package order

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// A placement is one Place call waiting for its transaction.
type placement struct {
	in    PlaceInput
	key   string
	hash  string
	trace string
	at    time.Time // when Place was called

	order   Order
	created bool
	err     error

	// wake is closed when a leader has committed this placement (done is
	// then true) or has made it the next leader.
	wake chan struct{}
	done bool
}

// maxPlaceBatch bounds how many orders share one transaction.
const maxPlaceBatch = 256

// placeTimeout bounds one batch's transaction. A batch serves many
// requests, so it does not run on any one request's context.
const placeTimeout = 10 * time.Second

// placer is group commit without a goroutine of its own. The first caller
// becomes the leader and commits whatever has queued up meanwhile, itself
// included; callers arriving during that commit queue up, and when it is
// done the leader hands the lead to the first of them, whose batch then
// holds all of them. Under load, one commit (one fsync) serves many orders;
// alone, an order commits at once with no added delay.
type placer struct {
	mu      sync.Mutex
	queue   []*placement
	leading bool
}

// submit returns when p has been committed (or has failed); run stores a
// batch and sets each placement's result.
func (pl *placer) submit(ctx context.Context, p *placement, run func(context.Context, []*placement)) {
	wake := make(chan struct{})
	p.wake = wake
	pl.mu.Lock()
	pl.queue = append(pl.queue, p)
	if pl.leading {
		pl.mu.Unlock()
		<-wake
		if p.done { // written before the close of wake
			return
		}
		pl.mu.Lock()
	}
	pl.leading = true
	n := min(len(pl.queue), maxPlaceBatch)
	batch := pl.queue[:n:n]
	pl.queue = pl.queue[n:]
	pl.mu.Unlock()

	runBatch(ctx, batch, run)

	pl.mu.Lock()
	for _, q := range batch {
		if q != p {
			q.done = true
			close(q.wake)
		}
	}
	if len(pl.queue) > 0 {
		close(pl.queue[0].wake) // the next leader
	} else {
		pl.leading = false
	}
	pl.mu.Unlock()
}

// runBatch runs one batch. A panic in it becomes every placement's error:
// the hand-off after it must happen, or every later Place would wait for a
// leader that is gone.
func runBatch(ctx context.Context, batch []*placement, run func(context.Context, []*placement)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), placeTimeout)
	defer cancel()
	defer func() {
		if r := recover(); r != nil {
			for _, p := range batch {
				p.order, p.created, p.err = Order{}, false, fmt.Errorf("place batch panicked: %v", r)
			}
		}
	}()
	run(ctx, batch)
}
