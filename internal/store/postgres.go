package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgresConns bounds each pool's connections, so each instance's; many
// instances share one server, whose max_connections (100 by default) is
// the real limit.
const PostgresConns = 16

func parsePostgres(url string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx's message may quote the URL, password included.
		return nil, fmt.Errorf("database URL %s: not a valid PostgreSQL URL", Redact(url))
	}
	return cfg, nil
}

func openPostgres(ctx context.Context, url string) (*DB, error) {
	cfg, err := parsePostgres(url)
	if err != nil {
		return nil, err
	}
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(PostgresConns)
	pool.SetMaxIdleConns(PostgresConns)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	db := &DB{engine: Postgres, url: url, write: pool, read: pool}
	if err := db.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}
