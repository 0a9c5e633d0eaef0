// Package storetest gives tests a real, empty database: a temporary SQLite
// file, or a fresh PostgreSQL database on the server named by
// CONVERGE_TEST_POSTGRES_URL, dropped when the test ends.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/convergehq/converge/internal/store"
)

// PostgresEnv names the variable that points the tests at a PostgreSQL
// server, e.g. postgres://postgres@127.0.0.1:5432/test. Each test creates a
// database of its own there.
const PostgresEnv = "CONVERGE_TEST_POSTGRES_URL"

// Open returns a fresh SQLite database named name in t.TempDir().
func Open(t testing.TB, name string) *store.DB {
	t.Helper()
	return OpenURL(t, URL(t, store.SQLite, name))
}

// OpenURL opens url and closes it when the test ends.
func OpenURL(t testing.TB, url string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), url)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Each runs fn as a subtest once per engine: SQLite, and PostgreSQL when
// CONVERGE_TEST_POSTGRES_URL is set (the subtest is skipped, saying so,
// when it is not).
func Each(t *testing.T, fn func(t *testing.T, engine store.Engine)) {
	t.Helper()
	for _, e := range []store.Engine{store.SQLite, store.Postgres} {
		t.Run(string(e), func(t *testing.T) {
			if e == store.Postgres {
				RequirePostgres(t)
			}
			fn(t, e)
		})
	}
}

// RequirePostgres skips the test, with a message that says how to run it,
// unless CONVERGE_TEST_POSTGRES_URL is set.
func RequirePostgres(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Skipf("%s is not set; set it (e.g. postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL tests", PostgresEnv)
	}
	return base
}

// URL returns the URL of a fresh, empty database of engine: a file in
// t.TempDir() for SQLite, a new database on the test server for
// PostgreSQL (dropped at the end of the test). Several stores may open it,
// as several instances of a service would.
func URL(t testing.TB, engine store.Engine, name string) string {
	t.Helper()
	if engine == store.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), name+".db")
	}
	base := RequirePostgres(t)
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	dbName := "converge_test_" + strings.ToLower(rand.Text()[:16])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("%s: %v", PostgresEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, `CREATE DATABASE `+dbName); err != nil {
		admin.Close()
		t.Fatalf("create test database on %s: %v", store.Redact(base), err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a connection a failed test left open must not keep the
		// database alive.
		if _, err := admin.ExecContext(ctx, `DROP DATABASE IF EXISTS `+dbName+` WITH (FORCE)`); err != nil {
			t.Errorf("drop test database %s: %v", dbName, err)
		}
	})
	u.Path = "/" + dbName
	return u.String()
}
