"""psycopg 3's automatic prepared statements across a type dropped and recreated.

Usage: prepared_change_type.py DSN

The scenario of psycopg's own test_change_type (tests/test_prepared.py): with
prepare_threshold = 0 every statement is prepared on first use; when a DROP or a ROLLBACK
completes, psycopg forgets its statements and sends DEALLOCATE ALL, then prepares the same
texts again. A proxy must not keep answering for statements the server no longer has
("prepared statement ... does not exist") nor run a plan for the dropped type.

Run by tests/transparency.rs through pgward in transaction mode, and directly against
PostgreSQL with the same assertions. Exits non-zero with a message on the first failure.
"""

import os
import sys

import psycopg

from checks import check, fail

def create(conn, enum, table):
    conn.execute(f"CREATE TYPE {enum} AS ENUM ('foo', 'bar', 'baz')")
    conn.execute(f"CREATE TABLE {table} (id integer, bar {enum}[])")


def insert(conn, enum, table, values):
    conn.cursor().execute(
        f"INSERT INTO {table} (bar) VALUES (%(enum_col)s::{enum}[])",
        {"enum_col": values},
    )


def drop(conn, enum, table):
    conn.execute(f"DROP TABLE {table}")
    conn.execute(f"DROP TYPE {enum}")


def rows(conn, table):
    return conn.execute(f"SELECT bar::text[] FROM {table} ORDER BY 1").fetchall()


def change_type(dsn, suffix, autocommit):
    """Create, insert, drop, recreate, insert again (psycopg's test_change_type)."""
    enum = f"tr_prepenum_{suffix}"
    table = f"tr_preptable_{suffix}"
    with psycopg.connect(dsn, autocommit=autocommit) as conn:
        conn.prepare_threshold = 0
        for round in range(3):
            create(conn, enum, table)
            insert(conn, enum, table, ["foo"])
            drop(conn, enum, table)
            create(conn, enum, table)
            insert(conn, enum, table, ["foo"])
            insert(conn, enum, table, ["bar", "baz"])
            got = rows(conn, table)
            want = [(["bar", "baz"],), (["foo"],)]
            check(got == want, f"{suffix} round {round}: rows {got}, want {want}")
            drop(conn, enum, table)
            if not autocommit:
                conn.commit()


def change_type_rollback(dsn, suffix):
    """Create, insert, ROLLBACK, three times (psycopg's test_change_type_execute)."""
    enum = f"tr_prepenum_{suffix}"
    table = f"tr_preptable_{suffix}"
    with psycopg.connect(dsn) as conn:
        conn.prepare_threshold = 0
        for round in range(3):
            create(conn, enum, table)
            insert(conn, enum, table, ["foo"])
            got = rows(conn, table)
            check(got == [(["foo"],)], f"{suffix} round {round}: rows {got}")
            conn.rollback()


def main():
    if len(sys.argv) != 2:
        fail("usage: prepared_change_type.py DSN")
    dsn = sys.argv[1]
    # Names of this run only: other tests share the database.
    pid = os.getpid()
    try:
        change_type(dsn, f"{pid}_tx", autocommit=False)
        change_type(dsn, f"{pid}_ac", autocommit=True)
        change_type_rollback(dsn, f"{pid}_rb")
    except psycopg.Error as e:
        fail(f"{type(e).__name__} (SQLSTATE {e.sqlstate}): {e}")
    print("ok")


if __name__ == "__main__":
    main()
