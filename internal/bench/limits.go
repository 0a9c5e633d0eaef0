package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/convergehq/converge/internal/broker"
	"github.com/convergehq/converge/internal/events"
	"github.com/convergehq/converge/internal/order"
	"github.com/convergehq/converge/internal/order/ordersql"
	"github.com/convergehq/converge/internal/store"
)

// Limits are the raw rates of the parts one order crosses, each measured
// for a fixed time with no load running: the disk, SQLite and the embedded
// broker alone, on the same disk as the system's data; PostgreSQL on the
// server the cluster uses; the cluster's own brokers before its load.
type Limits struct {
	Fsync       float64 `json:"fsync_per_s"`                     // 8 KiB append + fsync
	SQLiteOrder float64 `json:"sqlite_order_tx_per_s,omitempty"` // the order transaction: order row + outbox row, one commit (embedded)
	// PostgresOrder and Pgbench are the order transaction on PostgreSQL
	// from as many clients as the load has, by the order service's code
	// and by pgbench (cluster).
	PostgresOrder float64 `json:"postgres_order_tx_per_s,omitempty"`
	Pgbench       float64 `json:"pgbench_order_tx_per_s,omitempty"`
	PgbenchCPU    CPU     `json:"pgbench_cpu,omitzero"` // the machine's, per pgbench commit
	// PublishOne and PublishBatch are durable publishes: to an embedded
	// broker of the bench's own (embedded), or to an R3 stream on the
	// cluster's three brokers (cluster).
	PublishOne   float64 `json:"publish_one_msgs_per_s"`
	PublishBatch float64 `json:"publish_batch_msgs_per_s"` // PublishBatch of publishBatch messages
}

// publishBatch is the batch size of Limits.PublishBatch: the relay's
// default (outbox.RelayConfig.Batch).
const publishBatch = 256

// measureLimits measures each limit for d, one after the other, each in a
// fresh file or directory under dir, removed after it.
func measureLimits(ctx context.Context, dir string, d time.Duration, log *slog.Logger) (Limits, error) {
	var l Limits
	var err error
	if l.Fsync, err = fsyncRate(ctx, dir, d); err != nil {
		return l, fmt.Errorf("disk fsync: %w", err)
	}
	if l.SQLiteOrder, err = sqliteOrderRate(ctx, dir, d); err != nil {
		return l, fmt.Errorf("SQLite order transaction: %w", err)
	}
	if l.PublishOne, l.PublishBatch, err = publishRates(ctx, dir, d, log); err != nil {
		return l, fmt.Errorf("JetStream publish: %w", err)
	}
	return l, nil
}

// timed calls step until d has passed or ctx ends; each step does n units
// of work, and it returns the units done a second.
func timed(ctx context.Context, d time.Duration, n int, step func(i int) error) (float64, error) {
	start := time.Now()
	done := 0
	for i := 0; time.Since(start) < d; i++ {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := step(i); err != nil {
			return 0, err
		}
		done += n
	}
	return float64(done) / time.Since(start).Seconds(), nil
}

func fsyncRate(ctx context.Context, dir string, d time.Duration) (_ float64, err error) {
	f, err := os.CreateTemp(dir, "fsync-*")
	if err != nil {
		return 0, err
	}
	defer func() {
		err = errors.Join(err, f.Close(), os.Remove(f.Name()))
	}()
	block := make([]byte, 8<<10)
	return timed(ctx, d, 1, func(int) error {
		if _, err := f.Write(block); err != nil {
			return err
		}
		return f.Sync()
	})
}

// sqliteOrderRate commits, one at a time, the transaction that places an
// order: the order's row and its order.created event in the outbox, on a
// fresh database with the order service's own migrations and driver
// settings (WAL, synchronous=FULL).
func sqliteOrderRate(ctx context.Context, dir string, d time.Duration) (_ float64, err error) {
	sub, err := os.MkdirTemp(dir, "sqlite-")
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(sub)) }()
	return orderTxRate(ctx, "sqlite:"+filepath.Join(sub, "order.db"), 1, d)
}

// orderTxRate commits the order transaction with the order service's own
// code and driver from clients goroutines for d, on the database at url
// (migrated first), and returns the commits a second of them all.
func orderTxRate(ctx context.Context, url string, clients int, d time.Duration) (_ float64, err error) {
	db, err := store.Open(ctx, url)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, db.Close()) }()
	st, err := ordersql.Open(ctx, db)
	if err != nil {
		return 0, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total float64
		errs  []error
	)
	for c := range clients {
		wg.Go(func() {
			r, err := timed(ctx, d, 1, orderTx(ctx, st, fmt.Sprintf("bench-%d-", c)))
			mu.Lock()
			defer mu.Unlock()
			total += r
			errs = append(errs, err)
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// orderTx returns a step of timed that commits the order transaction: a
// PENDING order of customer prefix+i and its order.created event.
func orderTx(ctx context.Context, st *ordersql.Store, prefix string) func(i int) error {
	items := []order.Item{{SKU: "LOAD-1", Quantity: 2}}
	return func(i int) error {
		return st.Update(ctx, func(tx order.Tx) error {
			id, err := uuid.NewV7()
			if err != nil {
				return err
			}
			now := time.Now().UTC().Truncate(time.Microsecond)
			o := order.Order{ID: id.String(), CustomerID: prefix + strconv.Itoa(i), Status: order.Pending, Items: items, CreatedAt: now, UpdatedAt: now}
			if err := tx.Create(ctx, o, now, "", ""); err != nil {
				return err
			}
			e, err := events.New(order.Source, events.OrderCreated, o.ID,
				events.OrderCreatedData{OrderID: o.ID, CustomerID: o.CustomerID, Items: []events.Item{{SKU: "LOAD-1", Quantity: 2}}}, now)
			if err != nil {
				return err
			}
			return tx.Emit(ctx, e)
		})
	}
}

// publishRates publishes 400-byte messages durably (an embedded broker of
// its own, file storage, fsync on every write) through PublishBatch, one
// at a time and in batches of publishBatch.
func publishRates(ctx context.Context, dir string, d time.Duration, log *slog.Logger) (one, batch float64, err error) {
	sub, err := os.MkdirTemp(dir, "broker-")
	if err != nil {
		return 0, 0, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(sub)) }()
	srv, err := broker.StartServer(broker.ServerConfig{Dir: sub}, log)
	if err != nil {
		return 0, 0, err
	}
	defer srv.Shutdown()
	return publishRatesOn(ctx, broker.ClientConfig{URLs: []string{srv.ClientURL()}, Name: "bench"}, 1, d, log)
}

// publishRatesOn publishes 400-byte messages through PublishBatch into a
// stream of its own with replicas replicas on the brokers cc reaches, one
// at a time and in batches of publishBatch, and deletes the stream.
func publishRatesOn(ctx context.Context, cc broker.ClientConfig, replicas int, d time.Duration, log *slog.Logger) (one, batch float64, err error) {
	c, err := broker.Dial(ctx, cc, log)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	const stream = "BENCH_LIMITS"
	if err := c.EnsureStream(ctx, broker.StreamConfig{Name: stream, Subjects: []string{"bench.>"}, Replicas: replicas}); err != nil {
		return 0, 0, err
	}
	defer func() {
		if derr := c.JetStream().DeleteStream(context.WithoutCancel(ctx), stream); derr != nil {
			err = errors.Join(err, fmt.Errorf("delete stream %s: %w", stream, derr))
		}
	}()
	payload := make([]byte, 400)
	seq := 0
	rate := func(size int) (float64, error) {
		msgs := make([]broker.Message, size)
		return timed(ctx, d, size, func(int) error {
			for j := range msgs {
				seq++
				msgs[j] = broker.Message{ID: fmt.Sprint("m-", seq), Subject: "bench.x", Data: payload}
			}
			return c.PublishBatch(ctx, msgs)
		})
	}
	if one, err = rate(1); err != nil {
		return 0, 0, err
	}
	batch, err = rate(publishBatch)
	return one, batch, err
}
