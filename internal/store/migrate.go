package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"time"
)

// Migrations is one component's schema: the files migrations/*.sql of FS,
// applied in name order. A file of the same name under
// migrations/<engine>/ replaces the shared one on that engine, for the DDL
// that differs (auto-increment keys, binary columns).
type Migrations struct {
	Component string
	FS        fs.FS
}

// migrateLock is the PostgreSQL advisory lock key that serialises the
// migrations of instances starting at the same time (an arbitrary constant:
// "converg" in ASCII).
const migrateLock = 0x636f6e76657267

// Migrate applies, component by component, the migrations the database has
// not seen yet. Each file runs in its own transaction together with the row
// that records it. On PostgreSQL, instances that start together take turns
// under an advisory lock, so each migration runs once.
func (db *DB) Migrate(ctx context.Context, ms ...Migrations) (err error) {
	// One connection throughout: the advisory lock belongs to a session.
	c, err := db.write.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer c.Close()
	if db.engine == Postgres {
		if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrateLock); err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		defer func() {
			// Unlocking on a fresh context: a cancelled ctx must not leave the
			// lock held by a pooled session.
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if _, uerr := c.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, migrateLock); uerr != nil {
				// The session may still hold the lock: it must not go back
				// to the pool, where it would block every other instance.
				_ = c.Raw(func(any) error { return driver.ErrBadConn })
				if err == nil {
					err = fmt.Errorf("migrate: unlock: %w", uerr)
				}
			}
		}()
	}
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component  TEXT NOT NULL,
		version    TEXT NOT NULL,
		applied_at BIGINT NOT NULL,
		PRIMARY KEY (component, version))`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, m := range ms {
		if err := db.migrate(ctx, c, m.Component, m.FS); err != nil {
			return err
		}
	}
	return nil
}

// files returns the migration files for db's engine, by version (file
// name), in order.
func (db *DB) files(migrations fs.FS) ([]string, error) {
	byName := map[string]string{}
	for _, pattern := range []string{"migrations/*.sql", "migrations/" + string(db.engine) + "/*.sql"} {
		files, err := fs.Glob(migrations, pattern)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			byName[path.Base(f)] = f // the engine's own file comes second and wins
		}
	}
	names := make([]string, 0, len(byName))
	for name := range byName {
		names = append(names, name)
	}
	sort.Strings(names)
	files := make([]string, len(names))
	for i, name := range names {
		files[i] = byName[name]
	}
	return files, nil
}

func (db *DB) migrate(ctx context.Context, c *sql.Conn, component string, migrations fs.FS) error {
	files, err := db.files(migrations)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	for _, file := range files {
		name := path.Base(file) // the version recorded: the file name alone
		body, err := fs.ReadFile(migrations, file)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		if err := applyOnce(ctx, c, component, name, string(body)); err != nil {
			return fmt.Errorf("migrate %s %s: %w", component, name, err)
		}
	}
	return nil
}

func applyOnce(ctx context.Context, c *sql.Conn, component, version, body string) error {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }() // a no-op after Commit
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE component = $1 AND version = $2`,
		component, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, body); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (component, version, applied_at) VALUES ($1, $2, $3)`,
		component, version, time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}
