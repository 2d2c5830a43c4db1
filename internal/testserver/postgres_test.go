package testserver

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPostgresRestart checks that a server answers, and that a committed
// row survives Restart's SIGKILL while the server answers again after it.
func TestPostgresRestart(t *testing.T) {
	pg := StartPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect: %v; output:\n%s", err, pg.Output())
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	pg.Restart(t)
	conn, err = pgx.Connect(ctx, pg.DSN())
	if err != nil {
		t.Fatalf("connect after restart: %v; output:\n%s", err, pg.Output())
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SELECT v FROM t").Scan(&v); err != nil || v != "kept" {
		t.Fatalf("after restart: row = %q, %v", v, err)
	}
}

// TestPostgresTwo checks that two servers of one test binary (the second
// from the same template) run side by side, each with its own data.
func TestPostgresTwo(t *testing.T) {
	a, b := StartPostgres(t), StartPostgres(t)
	if a.Port == b.Port || a.DataDir == b.DataDir {
		t.Fatalf("servers share port or data: %s %s, %s %s", a.Addr, a.DataDir, b.Addr, b.DataDir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, pg := range []*Postgres{a, b} {
		dir, err := query(ctx, pg.DSN(), "SELECT current_setting('data_directory')")
		if err != nil || dir != pg.DataDir {
			t.Fatalf("server on %s: data directory %q, %v", pg.Addr, dir, err)
		}
	}
}
