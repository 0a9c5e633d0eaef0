// Package store opens a service's database from a URL, applies its embedded
// migrations and runs transactions. SQLite is the embedded default; the
// services see only *DB and *sql.Tx, so another engine can be added here
// without touching them.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// DB is a service's database. Writes go through Write; reads that need no
// transaction may use Read, which for SQLite is a separate pool of readers
// that never wait for the single writer.
type DB struct {
	Write *sql.DB
	Read  *sql.DB
	URL   string
}

// Open opens the database at url: "sqlite:PATH", "sqlite://PATH" or a bare
// file path. SQLite runs in WAL mode with synchronous=FULL, so a committed
// transaction survives a power cut.
func Open(ctx context.Context, url string) (*DB, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return nil, fmt.Errorf("open %s: PostgreSQL is not supported yet", redact(url))
	}
	path := strings.TrimPrefix(strings.TrimPrefix(url, "sqlite://"), "sqlite:")
	if path == "" {
		return nil, errors.New("open database: empty path")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	// Writers take the write lock when they begin, so a transaction never
	// fails upgrading from reader to writer.
	write, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	// SQLite has one writer at a time; one connection makes writers queue in
	// Go instead of spinning on SQLITE_BUSY.
	write.SetMaxOpenConns(1)
	write.SetConnMaxIdleTime(0)
	// Readers begin deferred: a read transaction is a snapshot of the
	// database (WAL) and never blocks the writer.
	read, err := sql.Open("sqlite", dsn+"&_pragma=query_only(ON)")
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	read.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	db := &DB{Write: write, Read: read, URL: url}
	if err := db.Ping(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Ping checks that the database answers; /readyz uses it.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.Write.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", redact(db.URL), err)
	}
	return nil
}

// Close closes both pools.
func (db *DB) Close() error {
	return errors.Join(db.Read.Close(), db.Write.Close())
}

// InTx runs fn in a write transaction and commits it if fn returns nil.
func (db *DB) InTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.Write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// Migrations is one component's schema: the files migrations/*.sql of FS,
// applied in name order.
type Migrations struct {
	Component string
	FS        fs.FS
}

// Migrate applies, component by component, the migrations the database has
// not seen yet. Each file runs in its own transaction together with the row
// that records it.
func (db *DB) Migrate(ctx context.Context, ms ...Migrations) error {
	if _, err := db.Write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component  TEXT NOT NULL,
		version    TEXT NOT NULL,
		applied_at BIGINT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, m := range ms {
		if err := db.migrate(ctx, m.Component, m.FS); err != nil {
			return err
		}
	}
	return nil
}

func (db *DB) migrate(ctx context.Context, component string, migrations fs.FS) error {
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	sort.Strings(names)
	for _, file := range names {
		name := path.Base(file) // the version recorded: the file name alone
		body, err := fs.ReadFile(migrations, file)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		err = db.InTx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE component = $1 AND version = $2`,
				component, name).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)`,
				component, name, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrate %s %s: %w", component, name, err)
		}
	}
	return nil
}

// IsUniqueViolation reports whether err is a unique or primary key
// constraint failure.
func IsUniqueViolation(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func redact(url string) string {
	if i := strings.Index(url, "@"); i >= 0 {
		if j := strings.Index(url, "://"); j >= 0 && j < i {
			return url[:j+3] + "…" + url[i:]
		}
	}
	return url
}
