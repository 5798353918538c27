"""A client that prepares a statement name it already holds, through pgward with the access
policy on. The duplicate Parse is refused (42P05) and the name keeps its statement, which is
checked at each execution under the search_path of that moment: once the path leads to a schema
the user may not read, it is refused (42501), whatever text the refused duplicate had.
Run by policy::a_duplicate_statement_name_keeps_its_checks. Usage: policy_duplicate_statement.py DSN
"""

import sys

import psycopg
from psycopg import pq

conn = psycopg.connect(sys.argv[1], autocommit=True)
pg = conn.pgconn


def sqlstate(result):
    return result.error_field(pq.DiagnosticField.SQLSTATE)


r = pg.prepare(b"q", b"SELECT * FROM customers ORDER BY id")
assert r.status == pq.ExecStatus.COMMAND_OK, r.error_message
r = pg.exec_prepared(b"q", [])
assert r.status == pq.ExecStatus.TUPLES_OK and r.ntuples == 2, r.error_message

conn.execute("SET search_path = s2")
r = pg.prepare(b"q", b"SELECT 1")
assert sqlstate(r) == b"42P05", (r.status, r.error_message)
r = pg.exec_prepared(b"q", [])
assert sqlstate(r) == b"42501", f"the statement ran: {r.status} {r.error_message!r} {r.ntuples} rows"
print("duplicate statement checked")
