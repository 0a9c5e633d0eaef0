package broker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PruneConsumed removes from stream the messages every one of its
// consumers has acknowledged (those at or below the lowest ack floor), and
// returns how many went. A stream without consumers is left alone: nobody
// has read it, so nothing in it is done with.
//
// It is the stream's retention: an interest-retention stream would delete
// each message as it is acknowledged, which with fsync on every write costs
// the broker a second synced write per message; pruning in bulk on a
// schedule costs one purge.
func (c *Conn) PruneConsumed(ctx context.Context, stream string) (uint64, error) {
	st, err := c.js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", stream, err)
	}
	var (
		floor uint64
		seen  bool
	)
	lister := st.ListConsumers(ctx)
	for info := range lister.Info() {
		if !seen || info.AckFloor.Stream < floor {
			floor = info.AckFloor.Stream
		}
		seen = true
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return 0, fmt.Errorf("prune %s: list consumers: %w", stream, err)
	}
	if !seen || floor == 0 {
		return 0, nil
	}
	before, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", stream, err)
	}
	if before.State.FirstSeq > floor {
		return 0, nil // nothing acknowledged is left
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(floor+1)); err != nil {
		return 0, fmt.Errorf("prune %s up to %d: %w", stream, floor, err)
	}
	after, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", stream, err)
	}
	return before.State.Msgs - after.State.Msgs, nil
}
