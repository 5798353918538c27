"""A client's cancel never cancels another client's statement. Client A cancels its short
statement just as it ends, while client B waits for A's server connection (pool of one in
transaction mode) to run its own. A cancel that reaches the server after B's statement began
would cancel B's; pgward keeps the connection from B until A's cancel has landed, as
PostgreSQL alone would (A and B on their own backends).

Usage: cancel_never_hits_another_client.py DSN
"""

import random
import sys
import threading
import time

import psycopg

from checks import fail

ATTEMPTS = 60

dsn = sys.argv[1]
rng = random.Random(7)
a = psycopg.connect(dsn, autocommit=True)
b = psycopg.connect(dsn, autocommit=True)
a.execute("select 1")
b.execute("select 1")
b_cancelled = []
a_errors = []


def run_a():
    try:
        a.execute("select pg_sleep(0.02)")
    except psycopg.errors.QueryCanceled:
        pass  # A's own statement may be cancelled: that is what A asked for
    except Exception as e:  # noqa: BLE001 - anything else is a failure
        a_errors.append(e)


def run_b():
    try:
        b.execute("select pg_sleep(0.05)")
    except psycopg.errors.QueryCanceled:
        b_cancelled.append(True)


for attempt in range(ATTEMPTS):
    a_query = threading.Thread(target=run_a)
    a_query.start()
    time.sleep(0.005)
    # B queues for the one server connection A holds.
    b_query = threading.Thread(target=run_b)
    b_query.start()
    # A cancels around the moment its statement ends: sometimes while it runs, sometimes
    # just after, while its server passes to B.
    time.sleep(0.012 + rng.random() * 0.012)
    a.cancel()
    a_query.join()
    b_query.join()
    if a_errors:
        fail(f"attempt {attempt}: client A failed: {a_errors[0]!r}")
    if b_cancelled:
        fail(f"attempt {attempt}: client A's cancel cancelled client B's statement")
a.close()
b.close()
print("ok")
