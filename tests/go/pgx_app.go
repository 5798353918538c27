// A pgx (v4) application: what it does must work through pgward in transaction mode as it does
// against PostgreSQL. Usage: pgx_app DSN TAG (TAG suffixes every object name, so the
// through-pgward and direct runs can share a database). Exits non-zero on failure.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

var tag string

func table() string { return "pgx_t_" + tag }

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pgx_app (%s): %s\n", tag, fmt.Sprintf(format, args...))
	os.Exit(1)
}

func same(got, want interface{}, what string) {
	if !reflect.DeepEqual(got, want) {
		fail("%s: got %#v, want %#v", what, got, want)
	}
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// One worker's round: typed parameters and results (binary formats, pgx's statement cache),
// a transaction, a unique violation, a savepoint rolled back, a batch, a cursor-sized read.
func one(ctx context.Context, pool *pgxpool.Pool, i int) {
	var (
		n  int32
		t  string
		j  map[string]interface{}
		b  int64
		ts time.Time
		a  []int32
		by []byte
	)
	at := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC)
	for k := 0; k < 3; k++ { // the same text again: a statement pgx prepared once, reused
		err := pool.QueryRow(ctx,
			"SELECT $1::int + 1, $2::text, $3::jsonb, $4::int8, $5::timestamptz, $6::int4[], $7::bytea",
			i, fmt.Sprintf("t%d", i), map[string]interface{}{"k": i}, int64(5), at, []int32{1, int32(i)}, []byte{0, 1, 2}).
			Scan(&n, &t, &j, &b, &ts, &a, &by)
		check(err, "typed round trip")
		same(n, int32(i+1), "int")
		same(t, fmt.Sprintf("t%d", i), "text")
		same(j, map[string]interface{}{"k": float64(i)}, "jsonb")
		same(b, int64(5), "int8")
		same(ts.Equal(at), true, "timestamptz")
		same(a, []int32{1, int32(i)}, "int4[]")
		same(by, []byte{0, 1, 2}, "bytea")
	}

	tx, err := pool.Begin(ctx)
	check(err, "begin")
	_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s(id, v) VALUES ($1, $2)", table()), i, fmt.Sprintf("v%d", i))
	check(err, "insert")
	var v string
	check(tx.QueryRow(ctx, fmt.Sprintf("SELECT v FROM %s WHERE id = $1", table()), i).Scan(&v), "read own write")
	same(v, fmt.Sprintf("v%d", i), "own write")
	// A savepoint (pgx's nested transaction) rolled back after a unique violation.
	sp, err := tx.Begin(ctx)
	check(err, "savepoint")
	_, err = sp.Exec(ctx, fmt.Sprintf("INSERT INTO %s(id, v) VALUES ($1, 'dup')", table()), i)
	same(sqlState(err), "23505", "duplicate key in a savepoint")
	check(sp.Rollback(ctx), "rollback to savepoint")
	check(tx.Commit(ctx), "commit")

	_, err = pool.Exec(ctx, fmt.Sprintf("INSERT INTO %s(id, v) VALUES ($1, 'dup')", table()), i)
	same(sqlState(err), "23505", "duplicate key")

	// A batch: several statements sent in one go, their results read in order.
	batch := &pgx.Batch{}
	batch.Queue("SELECT $1::int * 2", i)
	batch.Queue(fmt.Sprintf("UPDATE %s SET v = $2 WHERE id = $1", table()), i, fmt.Sprintf("w%d", i))
	batch.Queue(fmt.Sprintf("SELECT v FROM %s WHERE id = $1", table()), i)
	results := pool.SendBatch(ctx, batch)
	var d int32
	check(results.QueryRow().Scan(&d), "batch select")
	same(d, int32(2*i), "batch select")
	updated, err := results.Exec()
	check(err, "batch update")
	same(updated.RowsAffected(), int64(1), "batch update count")
	check(results.QueryRow().Scan(&v), "batch read back")
	same(v, fmt.Sprintf("w%d", i), "batch read back")
	check(results.Close(), "batch close")

	rows, err := pool.Query(ctx, "SELECT g FROM generate_series(1, 250) g")
	check(err, "series")
	count := 0
	for rows.Next() {
		var g int32
		check(rows.Scan(&g), "series row")
		count++
		same(g, int32(count), "series order")
	}
	check(rows.Err(), "series end")
	same(count, 250, "series rows")
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: pgx_app DSN TAG")
	}
	dsn := os.Args[1]
	tag = os.Args[2]
	ctx, stop := context.WithTimeout(context.Background(), 120*time.Second)
	defer stop()

	config, err := pgxpool.ParseConfig(dsn)
	check(err, "config")
	config.MaxConns = 10
	pool, err := pgxpool.ConnectConfig(ctx, config)
	check(err, "connect")
	defer pool.Close()

	_, err = pool.Exec(ctx, fmt.Sprintf("DROP TABLE IF EXISTS %s", table()))
	check(err, "drop")
	_, err = pool.Exec(ctx, fmt.Sprintf("CREATE TABLE %s(id int PRIMARY KEY, v text)", table()))
	check(err, "create")

	// 40 workers on a pool of 10 connections (and those on pgward's pool of 2).
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			one(ctx, pool, i)
		}(i)
	}
	wg.Wait()

	// A prepared statement by name on one connection, used twice.
	conn, err := pool.Acquire(ctx)
	check(err, "acquire")
	_, err = conn.Conn().Prepare(ctx, "by_id", fmt.Sprintf("SELECT v FROM %s WHERE id = $1", table()))
	check(err, "prepare")
	for _, id := range []int{3, 7} {
		var v string
		check(conn.QueryRow(ctx, "by_id", id).Scan(&v), "prepared by name")
		same(v, fmt.Sprintf("w%d", id), "prepared by name")
	}

	// Binary COPY of 1000 rows (pgx's CopyFrom), then read back.
	copyRows := make([][]interface{}, 1000)
	for k := range copyRows {
		copyRows[k] = []interface{}{1000 + k, fmt.Sprintf("c%d", k)}
	}
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{table()}, []string{"id", "v"}, pgx.CopyFromRows(copyRows))
	check(err, "copy from")
	same(copied, int64(1000), "rows copied")
	var total int64
	check(conn.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s WHERE v LIKE 'c%%'", table())).Scan(&total), "count copied")
	same(total, int64(1000), "rows read back")

	// A statement timeout set for one transaction: 57014, and the connection stays usable.
	tx, err := conn.Begin(ctx)
	check(err, "begin")
	_, err = tx.Exec(ctx, "SET LOCAL statement_timeout = '100ms'")
	check(err, "set local")
	_, err = tx.Exec(ctx, "SELECT pg_sleep(5)")
	same(sqlState(err), "57014", "statement timeout")
	check(tx.Rollback(ctx), "rollback")
	var after int32
	check(conn.QueryRow(ctx, "SELECT 1").Scan(&after), "after the timeout")

	// A context deadline: pgx cancels the query with a CancelRequest.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	started := time.Now()
	_, err = conn.Exec(short, "SELECT pg_sleep(10)")
	cancel()
	if err == nil || time.Since(started) > 5*time.Second {
		fail("a query past its context deadline: err %v after %v", err, time.Since(started))
	}
	conn.Release()

	// LISTEN on one connection, NOTIFY from another.
	listener, err := pool.Acquire(ctx)
	check(err, "acquire listener")
	channel := "pgx_ch_" + tag
	_, err = listener.Exec(ctx, "LISTEN "+channel)
	check(err, "listen")
	_, err = pool.Exec(ctx, "SELECT pg_notify($1, 'hello')", channel)
	check(err, "notify")
	wait, cancelWait := context.WithTimeout(ctx, 10*time.Second)
	notification, err := listener.Conn().WaitForNotification(wait)
	cancelWait()
	check(err, "wait for notification")
	same(notification.Channel, channel, "notification channel")
	same(notification.Payload, "hello", "notification payload")
	_, err = listener.Exec(ctx, "UNLISTEN *")
	check(err, "unlisten")
	listener.Release()

	// The simple protocol, as applications behind PgBouncer often configure pgx.
	simple, err := pgxpool.ParseConfig(dsn)
	check(err, "config")
	simple.ConnConfig.PreferSimpleProtocol = true
	simplePool, err := pgxpool.ConnectConfig(ctx, simple)
	check(err, "connect (simple protocol)")
	defer simplePool.Close()
	var s string
	check(simplePool.QueryRow(ctx, fmt.Sprintf("SELECT v FROM %s WHERE id = $1", table()), 5).Scan(&s), "simple protocol read")
	same(s, "w5", "simple protocol read")

	_, err = pool.Exec(ctx, fmt.Sprintf("DROP TABLE %s", table()))
	check(err, "drop")
	fmt.Println("pgx_app ok")
}
