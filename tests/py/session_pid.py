"""In session mode a client keeps one server, and the process id it is told at login is that
server's: pg_backend_pid() agrees with it, and pg_terminate_backend() of it from another
connection ends the client as it would directly.

Usage: session_pid.py DSN
"""

import sys
import time

import psycopg

from checks import fail


dsn = sys.argv[1]
with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn, autocommit=True) as other:
    told = conn.info.backend_pid
    for _ in range(3):
        (server,) = conn.execute("select pg_backend_pid()").fetchone()
        if server != told:
            fail(f"pg_backend_pid() is {server}, the client was told {told}")
    other.execute("select pg_terminate_backend(%s)", [told])
    deadline = time.time() + 5
    while True:
        try:
            conn.execute("select 1")
        except psycopg.OperationalError:
            break
        if time.time() > deadline:
            fail("the client's connection survived pg_terminate_backend of its pid")
        time.sleep(0.05)
print("ok")
