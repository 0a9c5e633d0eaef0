package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/convergehq/converge/internal/check"
	"github.com/convergehq/converge/internal/store"
)

func runCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check")
	dataDir := fs.String("data", "./converge-data", "data directory of a converge dev system (running or stopped), for the SQLite files")
	orderDB := fs.String("order-db", "", "the order service's database (default: sqlite under --data)")
	inventoryDB := fs.String("inventory-db", "", "the inventory service's database (default: sqlite under --data)")
	wait := fs.Duration("wait", 0, "keep checking until every invariant holds or this much time has passed (lets a running system settle)")
	if err := parseFlags(fs, args, getenv, stdout); err != nil {
		return err
	}
	dbs := map[string]string{"order": *orderDB, "inventory": *inventoryDB}
	for _, name := range []string{"order", "inventory"} {
		if url := dbs[name]; url != "" {
			if _, err := store.ParseURL(url); err != nil {
				return usageError{"check: --" + name + "-db: " + err.Error()}
			}
			continue
		}
		path := filepath.Join(*dataDir, name+".db")
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("check: no %s database at %s: is --data the directory converge dev uses?", name, path)
		}
		dbs[name] = "sqlite:" + path
	}
	orders, err := store.Open(ctx, dbs["order"])
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer orders.Close()
	inventory, err := store.Open(ctx, dbs["inventory"])
	if err != nil {
		return fmt.Errorf("check: %w", err)
	}
	defer inventory.Close()

	results, err := check.Settle(ctx, orders, inventory, *wait)
	if err != nil {
		return err
	}
	for _, r := range results {
		verdict := "OK  "
		if !r.OK {
			verdict = "FAIL"
		}
		fmt.Fprintf(stdout, "%s %s (%s)\n", verdict, r.Name, r.Detail)
	}
	if failed := len(check.Failed(results)); failed > 0 {
		return errors.New("check: " + fmt.Sprint(failed) + " invariant(s) failed")
	}
	return nil
}
