"""A client that prepares a statement name it already holds, through pgward with encryption
on TABLE (id int, name text, ssn text encrypted, email text encrypted). The duplicate Parse is
refused (42P05) and the name keeps its first statement, whose values must still be encrypted
when it runs. The Rust test (encryption::a_duplicate_statement_name_keeps_its_encryption)
checks what was stored. Usage: duplicate_statement.py DSN TABLE
"""

import sys

import psycopg
from psycopg import pq

dsn, table = sys.argv[1], sys.argv[2]
conn = psycopg.connect(dsn, autocommit=True)
pg = conn.pgconn


def expect(result, status, what):
    if result.status != status:
        raise SystemExit(f"{what}: {result.status} {result.error_message!r}")
    return result


expect(pg.prepare(b"ins", f"INSERT INTO {table} (id, ssn) VALUES ($1, $2)".encode()), pq.ExecStatus.COMMAND_OK, "prepare")
dup = expect(pg.prepare(b"ins", b"SELECT $1::int, $2::text"), pq.ExecStatus.FATAL_ERROR, "the duplicate")
assert dup.error_field(pq.DiagnosticField.SQLSTATE) == b"42P05", dup.error_message
expect(pg.exec_prepared(b"ins", [b"1", b"dup-ssn-1"]), pq.ExecStatus.COMMAND_OK, "run the first statement")

# A name holding a statement on no designated column, prepared again on one: refused too, and
# the name still runs its own statement, whose values are not encrypted.
expect(pg.prepare(b"sel", b"SELECT $1::int, $2::text"), pq.ExecStatus.COMMAND_OK, "prepare sel")
dup = expect(pg.prepare(b"sel", f"INSERT INTO {table} (id, ssn) VALUES ($1, $2)".encode()), pq.ExecStatus.FATAL_ERROR, "the duplicate sel")
row = expect(pg.exec_prepared(b"sel", [b"2", b"plain"]), pq.ExecStatus.TUPLES_OK, "run sel")
assert (row.get_value(0, 0), row.get_value(0, 1)) == (b"2", b"plain"), (row.get_value(0, 0), row.get_value(0, 1))

# After Close, the name is free again.
expect(pg.close_prepared(b"ins"), pq.ExecStatus.COMMAND_OK, "close")
expect(pg.prepare(b"ins", f"INSERT INTO {table} (id, ssn) VALUES ($1, $2)".encode()), pq.ExecStatus.COMMAND_OK, "prepare again")
expect(pg.exec_prepared(b"ins", [b"3", b"dup-ssn-3"]), pq.ExecStatus.COMMAND_OK, "run it")
print("duplicate statement ok")
