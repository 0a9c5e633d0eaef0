// Package storetest gives tests a real, empty database: a temporary SQLite
// file, closed when the test ends.
package storetest

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/convergehq/converge/internal/store"
)

// Open returns a fresh database named name in t.TempDir().
func Open(t testing.TB, name string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), name+".db"))
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
