package store_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/convergehq/converge/internal/store"
)

func TestMigrateOnceAndTx(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a.db")
	db, err := store.Open(ctx, "sqlite:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	migs := fstest.MapFS{
		"migrations/001_t.sql": {Data: []byte(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);`)},
		"migrations/002_u.sql": {Data: []byte(`CREATE TABLE u (k TEXT PRIMARY KEY);`)},
	}
	for range 2 { // a second run applies nothing and does not fail
		if err := db.Migrate(ctx, store.Migrations{Component: "test", FS: migs}); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	// $n placeholders work with the SQLite driver, as they will with PostgreSQL.
	if err := db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "a", 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "b", 2); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("InTx error = %v, want boom", err)
	}
	var n int
	if err := db.Read.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows after rollback = %d, want 1", n)
	}
	err = db.InTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "a", 3)
		return err
	})
	if !store.IsUniqueViolation(err) {
		t.Fatalf("duplicate key error = %v, want a unique violation", err)
	}
	// The read pool refuses writes.
	if _, err := db.Read.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ('z', 0)`); err == nil {
		t.Fatal("write through the read pool succeeded, want an error")
	}
}

func TestOpenRejectsPostgresForNow(t *testing.T) {
	_, err := store.Open(context.Background(), "postgres://u:secret@localhost/db")
	if err == nil {
		t.Fatal("want an error")
	}
	if got := err.Error(); strings.Contains(got, "secret") {
		t.Fatalf("error leaks the password: %s", got)
	}
}
