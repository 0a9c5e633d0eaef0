package store_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/convergehq/converge/internal/store"
	"github.com/convergehq/converge/internal/store/storetest"
)

var testMigrations = fstest.MapFS{
	"migrations/001_t.sql": {Data: []byte(`CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);`)},
	"migrations/002_u.sql": {Data: []byte(`CREATE TABLE u (k TEXT PRIMARY KEY);`)},
	// An engine's own file replaces the shared one of the same name.
	"migrations/003_seq.sql":          {Data: []byte(`CREATE TABLE s (n INTEGER PRIMARY KEY AUTOINCREMENT);`)},
	"migrations/postgres/003_seq.sql": {Data: []byte(`CREATE TABLE s (n BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY);`)},
}

// The store contract, on every engine.
func TestStoreContract(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		ctx := context.Background()
		db := storetest.OpenURL(t, storetest.URL(t, engine, "contract"))
		if db.Engine() != engine {
			t.Fatalf("Engine() = %s, want %s", db.Engine(), engine)
		}
		for range 2 { // a second run applies nothing and does not fail
			if err := db.Migrate(ctx, store.Migrations{Component: "test", FS: testMigrations}); err != nil {
				t.Fatalf("migrate: %v", err)
			}
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO s DEFAULT VALUES`); err != nil {
			t.Fatalf("the engine's own migration did not run: %v", err)
		}

		// $n placeholders work on both engines.
		if err := db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "a", 1)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		err := db.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "b", 2); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("InTx error = %v, want boom", err)
		}
		if n := count(t, db, "t"); n != 1 {
			t.Fatalf("rows after rollback = %d, want 1", n)
		}

		// A unique violation is recognised by its code, and other errors are not one.
		err = db.InTx(ctx, func(tx *store.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ($1, $2)`, "a", 3)
			return err
		})
		if !store.IsUniqueViolation(err) {
			t.Fatalf("duplicate key error = %v, want a unique violation", err)
		}
		if store.IsUniqueViolation(errors.New("UNIQUE constraint failed: t.k")) {
			t.Fatal("a message that merely looks like a unique violation was taken for one")
		}
		_, err = db.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ('n', NULL)`)
		if err == nil || store.IsUniqueViolation(err) {
			t.Fatalf("NOT NULL violation: error = %v, want an error that is not a unique violation", err)
		}

		// ReadTx sees one snapshot.
		err = db.ReadTx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&n); err != nil {
				return err
			}
			if _, err := db.ExecContext(ctx, `INSERT INTO t (k, v) VALUES ('late', 9)`); err != nil {
				return err
			}
			var again int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM t`).Scan(&again); err != nil {
				return err
			}
			if again != n {
				t.Errorf("a read transaction saw a later commit: count %d, then %d", n, again)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// Many instances migrate one database at once: each migration runs once,
// and none fails.
func TestConcurrentMigrate(t *testing.T) {
	storetest.Each(t, func(t *testing.T, engine store.Engine) {
		url := storetest.URL(t, engine, "race")
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for range 6 {
			db := storetest.OpenURL(t, url)
			wg.Go(func() {
				errs <- db.Migrate(context.Background(), store.Migrations{Component: "test", FS: testMigrations})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Errorf("concurrent migrate: %v", err)
			}
		}
		db := storetest.OpenURL(t, url)
		if n := count(t, db, "schema_migrations"); n != 3 {
			t.Fatalf("schema_migrations has %d rows, want 3", n)
		}
	})
}

// Two transactions that lock each other's rows in opposite order deadlock;
// PostgreSQL aborts one, and InTx runs it again, so both succeed.
func TestInTxRetriesDeadlocks(t *testing.T) {
	storetest.RequirePostgres(t)
	ctx := context.Background()
	db := storetest.OpenURL(t, storetest.URL(t, store.Postgres, "deadlock"))
	if _, err := db.ExecContext(ctx, `CREATE TABLE d (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO d VALUES ('x', 0), ('y', 0)`); err != nil {
		t.Fatal(err)
	}
	var (
		wg      sync.WaitGroup
		both    sync.WaitGroup // both hold their first lock before either takes its second
		mu      sync.Mutex
		attempt = map[string]int{}
	)
	both.Add(2)
	run := func(first, second string) error {
		return db.InTx(ctx, func(tx *store.Tx) error {
			mu.Lock()
			attempt[first]++
			n := attempt[first]
			mu.Unlock()
			for _, k := range []string{first, second} {
				if _, err := tx.ExecContext(ctx, `UPDATE d SET v = v + 1 WHERE k = $1`, k); err != nil {
					return err
				}
				if k == first && n == 1 {
					both.Done()
					both.Wait()
				}
			}
			return nil
		})
	}
	errs := make([]error, 2)
	wg.Go(func() { errs[0] = run("x", "y") })
	wg.Go(func() { errs[1] = run("y", "x") })
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("transaction %d: %v", i, err)
		}
	}
	var sum int
	if err := db.QueryRowContext(ctx, `SELECT sum(v) FROM d`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 4 {
		t.Fatalf("sum = %d, want 4 (each transaction applied exactly once)", sum)
	}
	if attempt["x"]+attempt["y"] < 3 {
		t.Fatalf("attempts %v: no transaction ran twice, so no deadlock was provoked", attempt)
	}
}

func TestOpenRefusesBadURLs(t *testing.T) {
	for _, url := range []string{"", "mysql://u:secret@h/db", "sqlite:", "postgres://u:secret@localhost:notaport/db"} {
		_, err := store.Open(context.Background(), url)
		if err == nil {
			t.Errorf("Open(%q): want an error", url)
			continue
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("Open(%q): the error leaks the password: %s", url, err)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db": "postgres://u:…@h:5432/db",
		"postgres://u@h/db":             "postgres://u@h/db",
		"sqlite:/tmp/a.db":              "sqlite:/tmp/a.db",
	} {
		if got := store.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func count(t testing.TB, db *store.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRowContext(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
