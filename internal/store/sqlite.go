package store

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"modernc.org/sqlite"
)

func sqlitePath(url string) string {
	return strings.TrimPrefix(strings.TrimPrefix(url, "sqlite://"), "sqlite:")
}

func openSQLite(ctx context.Context, url string) (*DB, error) {
	path := sqlitePath(url)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	// Writers take the write lock when they begin, so a transaction never
	// fails upgrading from reader to writer.
	write, err := openPool(dsn + "&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// SQLite has one writer at a time; one connection makes writers queue in
	// Go instead of spinning on SQLITE_BUSY.
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	// Readers begin deferred: a read transaction is a snapshot of the
	// database (WAL) and never blocks the writer.
	read, err := openPool(dsn + "&_pragma=query_only(ON)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(readers)
	// All of them stay open when idle: database/sql keeps two by default,
	// and a reader closed and opened again under load costs its pragmas
	// and every statement it had prepared.
	read.SetMaxIdleConns(readers)
	db := &DB{engine: SQLite, url: url, write: write, read: read}
	// Both pools, as each has its own DSN; Ping covers only the readers.
	err = db.Ping(ctx)
	if err == nil {
		if err = write.PingContext(ctx); err != nil {
			err = fmt.Errorf("ping %s: %w", db, err)
		}
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// openPool opens a pool of connections to dsn that keep their statements
// prepared.
func openPool(dsn string) (*sql.DB, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(cachingConnector{c}), nil
}
