package store

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// A connection keeps at most stmtCacheSize statements, even while the
// least recently used one cannot go because its rows are open.
func TestStatementCacheStaysBounded(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "bounded.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.write.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	open, err := conn.QueryContext(ctx, `SELECT 1 UNION ALL SELECT 2`)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	for n := range 2 * stmtCacheSize {
		var v int
		if err := conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT %d`, n)).Scan(&v); err != nil || v != n {
			t.Fatalf("query %d: got %d, %v", n, v, err)
		}
	}
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*cachingConn)
		if !ok {
			return fmt.Errorf("connection is a %T, want *cachingConn", dc)
		}
		if got := c.lru.Len(); got != stmtCacheSize || len(c.byQuery) != got {
			return fmt.Errorf("kept statements: list %d, map %d, want %d", got, len(c.byQuery), stmtCacheSize)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !open.Next() {
		t.Fatalf("the open rows lost their rows: %v", open.Err())
	}
}

// Readers stay open between bursts of reads: a reader closed for being
// idle and opened again would prepare its statements anew.
func TestSQLiteReadersStayOpenWhenIdle(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "readers.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	readers := db.read.Stats().MaxOpenConnections
	for range 5 {
		// Hold every reader at once, then let them all go idle.
		conns := make([]*sql.Conn, readers)
		for i := range conns {
			if conns[i], err = db.read.Conn(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if s := db.read.Stats(); s.MaxIdleClosed > 0 || s.OpenConnections != readers {
		t.Fatalf("readers: %d open of %d, %d closed for being idle; want all %d kept open", s.OpenConnections, readers, s.MaxIdleClosed, readers)
	}
}
