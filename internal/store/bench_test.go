package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"testing/fstest"

	"github.com/convergehq/converge/internal/store"
)

// BenchmarkCommit measures the raw commit rate of a store.DB (SQLite, WAL,
// synchronous=FULL): one small insert per transaction, the floor under every
// durable step of converge.
func BenchmarkCommit(b *testing.B) {
	ctx := context.Background()
	db, err := store.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, store.Migrations{Component: "bench", FS: fstest.MapFS{
		"migrations/001.sql": {Data: []byte(`CREATE TABLE t (seq INTEGER PRIMARY KEY, v TEXT NOT NULL)`)},
	}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (v) VALUES ($1)`, fmt.Sprint("row-", i))
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tx/s")
}
