"""LISTEN/NOTIFY as a psycopg 3 application uses it.

Usage: listen_notify.py DSN

Run by tests/transparency.rs through pgward in transaction mode, and directly against
PostgreSQL with the same assertions. Exits non-zero with a message on the first failure.
"""

import os
import sys

import psycopg

from checks import check, fail

TIMEOUT = 5.0


def triples(notifies):
    return [(n.channel, n.payload, n.pid) for n in notifies]


def main():
    if len(sys.argv) != 2:
        fail("usage: listen_notify.py DSN")
    dsn = sys.argv[1]
    # Channels of this run only: other tests share the database.
    channel = f"tr_py_{os.getpid()}"
    other = f"{channel}_other"

    with psycopg.connect(dsn, autocommit=True) as listener, psycopg.connect(
        dsn, autocommit=True
    ) as notifier:
        listener_pid = listener.info.backend_pid
        notifier_pid = notifier.info.backend_pid
        check(listener_pid == listener.pgconn.backend_pid, "info and pgconn pids differ")

        # LISTEN is answered as PostgreSQL answers it.
        status = listener.execute(f"LISTEN {channel}").statusmessage
        check(status == "LISTEN", f"LISTEN answered {status!r}")
        listener.execute(f"LISTEN {other}")

        # From another connection, with payloads and the notifier's pid as the notifier sees it.
        notifier.execute(f"NOTIFY {channel}, 'n1'")
        notifier.execute("SELECT pg_notify(%s, %s)", (channel, "n2"))
        notifier.execute(f"NOTIFY {other}, 'n3'")
        got = triples(listener.notifies(timeout=TIMEOUT, stop_after=3))
        want = [
            (channel, "n1", notifier_pid),
            (channel, "n2", notifier_pid),
            (other, "n3", notifier_pid),
        ]
        check(got == want, f"notifications: got {got}, want {want}")

        # UNLISTEN one channel: its notification is not delivered, the marker after it is.
        status = listener.execute(f"UNLISTEN {other}").statusmessage
        check(status == "UNLISTEN", f"UNLISTEN answered {status!r}")
        notifier.execute(f"NOTIFY {other}, 'after unlisten'")
        notifier.execute(f"NOTIFY {channel}, 'marker 1'")
        got = triples(listener.notifies(timeout=TIMEOUT, stop_after=1))
        want = [(channel, "marker 1", notifier_pid)]
        check(got == want, f"after UNLISTEN {other}: got {got}, want {want}")

        # UNLISTEN *: nothing is delivered until the next LISTEN.
        status = listener.execute("UNLISTEN *").statusmessage
        check(status == "UNLISTEN", f"UNLISTEN * answered {status!r}")
        notifier.execute(f"NOTIFY {channel}, 'after unlisten all'")
        notifier.execute(f"NOTIFY {other}, 'after unlisten all'")
        listener.execute(f"LISTEN {channel}")
        notifier.execute(f"NOTIFY {channel}, 'marker 2'")
        got = triples(listener.notifies(timeout=TIMEOUT, stop_after=1))
        want = [(channel, "marker 2", notifier_pid)]
        check(got == want, f"after UNLISTEN *: got {got}, want {want}")

        # A handler sees notifications that arrive while the listener runs queries.
        received = []
        listener.add_notify_handler(received.append)
        notifier.execute(f"NOTIFY {channel}, 'while busy'")
        for _ in range(50):
            if received:
                break
            listener.execute("SELECT pg_sleep(0.1)")
        got = triples(received)
        want = [(channel, "while busy", notifier_pid)]
        check(got == want, f"while running queries: got {got}, want {want}")

        # Its own notification reaches the notifying client before the command returns.
        received.clear()
        listener.execute(f"NOTIFY {channel}, 'self 1'")
        got = triples(received)
        want = [(channel, "self 1", listener_pid)]
        check(got == want, f"own NOTIFY, when execute returned: got {got}, want {want}")
        received.clear()
        listener.execute("SELECT pg_notify(%s, 'self 2')", (channel,))
        got = triples(received)
        want = [(channel, "self 2", listener_pid)]
        check(got == want, f"own pg_notify, when execute returned: got {got}, want {want}")

    print("ok")


if __name__ == "__main__":
    main()
