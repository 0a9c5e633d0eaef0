package store

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
)

// SQLite's driver parses and plans a statement at every ExecContext and
// QueryContext; on the order path that was most of SQLite's share of the
// CPU. A cachingConnector keeps each connection's statements prepared, so
// a query runs its plan again with new arguments. PostgreSQL needs none of
// this: pgx keeps its own per-connection statement cache.

// stmtCacheSize bounds the statements each connection keeps. The services
// send a few dozen distinct queries; the rest of the room is for the
// queries whose text varies with a list's length (IN ($1, $2, ...)).
const stmtCacheSize = 256

// sqliteConn is what every connection of the SQLite driver implements and
// database/sql looks for; the wrapper forwards all of it.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// cachedStmt is a statement the driver prepared once; it runs through
// these two.
type cachedStmt interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

// cachingConnector opens connections that keep their statements prepared.
type cachingConnector struct {
	driver.Connector
}

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(sqliteConn)
	if !ok {
		return nil, errors.Join(fmt.Errorf("store: SQLite connection %T lacks an interface database/sql needs", conn), conn.Close())
	}
	return &cachingConn{sqliteConn: sc, byQuery: make(map[string]*list.Element)}, nil
}

// cachingConn is one connection and its prepared statements, least
// recently used last. database/sql uses a connection from one goroutine
// at a time, so it needs no lock.
type cachingConn struct {
	sqliteConn
	lru     list.List // of *stmtEntry
	byQuery map[string]*list.Element
}

type stmtEntry struct {
	query string
	stmt  cachedStmt
	// open is set while rows of the statement are being read: a query
	// issued meanwhile with the same text (a nested loop) must not reset
	// them, so it runs unprepared.
	open bool
}

// Unwrap returns the driver's connection (modernc's Limit looks for it).
func (c *cachingConn) Unwrap() driver.Conn { return c.sqliteConn }

// entry returns the prepared statement of query, preparing it on first use,
// or nil when it is busy. (A script of several statements is kept too; the
// driver parses it at each run, as it would uncached.)
func (c *cachingConn) entry(ctx context.Context, query string) (*stmtEntry, error) {
	if el, ok := c.byQuery[query]; ok {
		e := el.Value.(*stmtEntry)
		if e.open {
			return nil, nil
		}
		c.lru.MoveToFront(el)
		return e, nil
	}
	ds, err := c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s, ok := ds.(cachedStmt)
	if !ok {
		return nil, ds.Close() // without the context methods: run it the plain way
	}
	e := &stmtEntry{query: query, stmt: s}
	c.byQuery[query] = c.lru.PushFront(e)
	// Out go the least recently used, past those whose rows are open.
	var errs []error
	for el := c.lru.Back(); el != nil && c.lru.Len() > stmtCacheSize; {
		prev := el.Prev()
		if old := el.Value.(*stmtEntry); !old.open {
			c.lru.Remove(el)
			delete(c.byQuery, old.query)
			errs = append(errs, old.stmt.Close())
		}
		el = prev
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("close a statement no longer kept: %w", err)
	}
	return e, nil
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, err := c.entry(ctx, query)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return c.sqliteConn.ExecContext(ctx, query, args)
	}
	return e.stmt.ExecContext(ctx, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	e, err := c.entry(ctx, query)
	if err != nil {
		return nil, err
	}
	if e == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := e.stmt.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	e.open = true
	return &cachedRows{Rows: rows, entry: e}, nil
}

// Close closes the kept statements, then the connection.
func (c *cachingConn) Close() error {
	var errs []error
	for el := c.lru.Front(); el != nil; el = el.Next() {
		errs = append(errs, el.Value.(*stmtEntry).stmt.Close())
	}
	c.lru.Init()
	clear(c.byQuery)
	return errors.Join(append(errs, c.sqliteConn.Close())...)
}

// cachedRows frees its statement for the next query when closed. It
// forwards only what driver.Rows has: rows.ColumnTypes would lose the
// driver's type details, which nothing here asks for.
type cachedRows struct {
	driver.Rows
	entry *stmtEntry
}

func (r *cachedRows) Close() error {
	r.entry.open = false
	return r.Rows.Close()
}
