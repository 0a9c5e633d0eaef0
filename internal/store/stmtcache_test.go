package store_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

// Statements run again and again on one connection give the right rows:
// more distinct queries than a connection keeps prepared and, on SQLite,
// the same query nested inside its own open rows and a kept statement
// pushed out while its rows are still being read. (SQLite's connections
// keep their statements prepared; pgx keeps its own, and refuses a query
// on a connection whose rows are open.)
func TestStatementsReused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		ctx := context.Background()
		db := storetest.OpenURL(t, storetest.URL(t, engine, "stmts"))
		if err := db.Migrate(ctx, store.Migrations{Component: "test", FS: testMigrations}); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		keys := []string{"a", "b", "c"}
		err := db.InTx(ctx, func(tx *store.Tx) error { // one connection throughout
			for i, k := range keys {
				if _, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, k, i); err != nil {
					return err
				}
			}
			if engine != store.SQLite {
				return nil
			}
			const all = `SELECT k FROM t ORDER BY k`
			outer, err := tx.QueryContext(ctx, all)
			if err != nil {
				return err
			}
			defer outer.Close()
			var seen []string
			for outer.Next() {
				var k string
				if err := outer.Scan(&k); err != nil {
					return err
				}
				seen = append(seen, k)
				if got := column(ctx, t, tx, all); !slices.Equal(got, keys) {
					t.Errorf("the same query inside its own rows, at %s: got %v, want %v", k, got, keys)
				}
				// More distinct statements than a connection keeps, while
				// the outer rows are open: the outer statement is the
				// least recently used and must not be closed under them.
				for n := range 300 {
					var v int
					if err := tx.QueryRowContext(ctx, fmt.Sprintf(`SELECT v + %d FROM t WHERE k = $1`, n), k).Scan(&v); err != nil {
						return fmt.Errorf("distinct query %d: %w", n, err)
					}
					if want := slices.Index(keys, k) + n; v != want {
						t.Errorf("distinct query %d for %s: got %d, want %d", n, k, v, want)
					}
				}
			}
			if err := outer.Err(); err != nil {
				return fmt.Errorf("outer rows: %w", err)
			}
			if !slices.Equal(seen, keys) {
				t.Errorf("outer rows: got %v, want %v", seen, keys)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// After the transaction, on the read pool: each again.
		for n := range 300 {
			var v int
			if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT v + %d FROM t WHERE k = $1`, n), "c").Scan(&v); err != nil || v != 2+n {
				t.Fatalf("distinct query %d after the transaction: got %d, %v; want %d", n, v, err, 2+n)
			}
		}
	})
}

func column(ctx context.Context, t *testing.T, tx *store.Tx, query string) []string {
	t.Helper()
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
