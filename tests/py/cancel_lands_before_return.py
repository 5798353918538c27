"""A cancel has reached the server when the client's cancel call returns (libpq waits for the
server to close the cancel connection): a cancel sent while nothing runs is a no-op, and the
client's next statement is never the one cancelled. psycopg sends exactly such a cancel when a
streamed query ends in an error.

Usage: cancel_lands_before_return.py DSN
"""

import sys

import psycopg

from checks import fail


dsn = sys.argv[1]
with psycopg.connect(dsn) as conn:
    for attempt in range(20):
        # In a transaction block the client keeps its server, so the cancel is forwarded
        # to it while it is idle.
        conn.execute("select 1")
        conn.cancel()
        try:
            conn.execute("select pg_sleep(0.2)")
        except psycopg.errors.QueryCanceled:
            fail(f"attempt {attempt}: the statement after an idle cancel was cancelled")
        conn.rollback()
print("ok")
