// Package store opens a service's database from a URL, applies its embedded
// migrations and runs transactions. Two engines sit behind one type: SQLite
// (the embedded default, one file per service) and PostgreSQL (the
// production topology, many instances on one server). The services see
// only *DB and *Tx; how each engine pools its connections is this
// package's business.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Engine names a database engine.
type Engine string

// The engines store can open.
const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// DB is a service's database.
type DB struct {
	engine Engine
	url    string
	// write takes transactions and writes. read serves reads outside a
	// transaction: for SQLite a separate pool of read-only connections that
	// never wait for the single writer; for PostgreSQL the same pool.
	write *sql.DB
	read  *sql.DB
	// observe, if set, is told of every InTx and ReadTx (see Observe).
	observe func(kind TxKind, took time.Duration, err error)
}

// TxKind tells a write transaction (InTx) from a read one (ReadTx).
type TxKind string

// The kinds of transaction.
const (
	WriteTx    TxKind = "write"
	ReadOnlyTx TxKind = "read"
)

// Observe makes db call f after every InTx and ReadTx with how long it took,
// retries included, and the error it returned (nil once committed). Call it
// before db is used; metrics use it.
func (db *DB) Observe(f func(kind TxKind, took time.Duration, err error)) { db.observe = f }

// Open opens the database at url: "postgres://..." or "postgresql://..."
// (pgx), or "sqlite:PATH", "sqlite://PATH" or a bare file path. SQLite runs
// in WAL mode with synchronous=FULL, so a committed transaction survives a
// power cut; PostgreSQL keeps its own durability settings (fsync on
// commit by default).
func Open(ctx context.Context, url string) (*DB, error) {
	engine, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	if engine == Postgres {
		return openPostgres(ctx, url)
	}
	return openSQLite(ctx, url)
}

// ParseURL checks a database URL without opening anything and returns its
// engine, so that configuration fails before anything is written.
func ParseURL(url string) (Engine, error) {
	switch {
	case url == "":
		return "", errors.New("database URL is empty")
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		if _, err := parsePostgres(url); err != nil {
			return "", err
		}
		return Postgres, nil
	case strings.Contains(url, "://") && !strings.HasPrefix(url, "sqlite://"):
		return "", fmt.Errorf("database URL %s: want sqlite:PATH or postgres://HOST/DB", Redact(url))
	}
	if sqlitePath(url) == "" {
		return "", fmt.Errorf("database URL %q: empty SQLite path", url)
	}
	return SQLite, nil
}

// Engine reports which engine db runs on.
func (db *DB) Engine() Engine { return db.engine }

// String names the database without its credentials, for logs and errors.
func (db *DB) String() string { return Redact(db.url) }

// Ping checks that the database answers; /readyz uses it, and a gateway
// takes an instance whose /readyz fails out of rotation. So it pings through
// the read pool: SQLite's write pool is one connection that every writer
// queues for, and a ping queued behind a burst of orders would call a busy
// instance unready. (On PostgreSQL both pools are one.)
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return fmt.Errorf("ping %s: %w", db, err)
	}
	return nil
}

// Close closes the database's connections.
func (db *DB) Close() error {
	if db.read != db.write {
		return errors.Join(db.read.Close(), db.write.Close())
	}
	return db.write.Close()
}

// QueryContext runs a read outside any transaction.
func (db *DB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.read.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a one-row read outside any transaction.
func (db *DB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.read.QueryRowContext(ctx, query, args...)
}

// ExecContext runs one statement in a transaction of its own.
func (db *DB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.write.ExecContext(ctx, query, args...)
}

// Tx is a write transaction. It knows its engine, for the few statements
// whose SQL differs between engines.
type Tx struct {
	*sql.Tx
	engine Engine
}

// Engine reports the engine the transaction runs on.
func (tx *Tx) Engine() Engine { return tx.engine }

// ForUpdate is the row-locking clause to append to a SELECT that precedes a
// write of the same rows: " FOR UPDATE" on PostgreSQL, nothing on SQLite,
// where the single writer holds the whole database.
func (tx *Tx) ForUpdate() string {
	if tx.engine == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// Lock takes a lock named key until the transaction ends, so that
// transactions deciding about the same thing (one order's reservation, say)
// run one after the other even when the rows they decide about do not
// exist yet. On SQLite the single writer already serialises them.
func (tx *Tx) Lock(ctx context.Context, key string) error {
	if tx.engine != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, key); err != nil {
		return fmt.Errorf("lock %q: %w", key, err)
	}
	return nil
}

// maxAttempts bounds how often InTx runs a transaction that the database
// aborted to resolve a conflict (deadlock, serialization failure).
const maxAttempts = 5

// InTx runs fn in a write transaction and commits it if fn returns nil.
// When PostgreSQL aborts the transaction to break a deadlock or a
// serialization conflict, fn runs again in a new transaction (at most
// maxAttempts times), so fn must not have effects outside the transaction
// that a second run would repeat wrongly.
func (db *DB) InTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	if db.observe != nil {
		defer func(start time.Time) { db.observe(WriteTx, time.Since(start), err) }(time.Now())
	}
	for attempt := 1; ; attempt++ {
		err := db.inTx(ctx, fn)
		if err == nil || !IsConflict(err) || attempt == maxAttempts {
			return err
		}
		// Jittered, growing pause, so the transactions that collided do not
		// collide again.
		pause := time.Duration(rand.Int64N(int64(time.Millisecond)<<attempt)) + time.Millisecond
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(pause):
		}
	}
}

func (db *DB) inTx(ctx context.Context, fn func(tx *Tx) error) error {
	stx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(&Tx{Tx: stx, engine: db.engine}); err != nil {
		if rerr := stx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := stx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ReadTx runs fn in a read-only transaction that sees one consistent
// snapshot of the database, even while others write.
func (db *DB) ReadTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	if db.observe != nil {
		defer func(start time.Time) { db.observe(ReadOnlyTx, time.Since(start), err) }(time.Now())
	}
	opts := &sql.TxOptions{ReadOnly: true}
	if db.engine == Postgres {
		opts.Isolation = sql.LevelRepeatableRead // one snapshot for the whole transaction
	}
	tx, err := db.read.BeginTx(ctx, opts)
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer func() { _ = tx.Rollback() }() // read only: nothing to undo
	return fn(tx)
}

// Redact hides the password of a URL such as postgres://user:pass@host/db.
func Redact(url string) string {
	if i := strings.LastIndex(url, "@"); i >= 0 {
		if j := strings.Index(url, "://"); j >= 0 && j < i {
			userinfo := url[j+3 : i]
			if user, _, ok := strings.Cut(userinfo, ":"); ok {
				return url[:j+3] + user + ":…" + url[i:]
			}
		}
	}
	return url
}
