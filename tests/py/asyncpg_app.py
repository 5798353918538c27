"""An asyncpg application through a pool: what it does must work through pgward in transaction
mode as it does against PostgreSQL. Usage: asyncpg_app.py DSN TAG (TAG suffixes every object
name, so the through-pgward and direct runs can share a database). Exits non-zero on failure."""
import asyncio
import datetime
import decimal
import json
import sys
import uuid

import asyncpg

DSN, TAG = sys.argv[1], sys.argv[2]
T = f"apg_t_{TAG}"
SCHEMA = f"apg_{TAG}"


async def one(conn, i):
    # Parameters and results in asyncpg's binary formats, through its named statements.
    row = await conn.fetchrow(
        "SELECT $1::int + 1 AS n, $2::text AS t, $3::numeric AS d, $4::uuid AS u,"
        " $5::timestamptz AS ts, $6::int[] AS a, $7::jsonb AS j",
        i, f"t{i}", decimal.Decimal("1.5"), uuid.UUID(int=i),
        datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), [1, 2, i], json.dumps({"k": i}))
    assert (row["n"], row["t"], row["d"], row["u"], row["a"]) == (
        i + 1, f"t{i}", decimal.Decimal("1.5"), uuid.UUID(int=i), [1, 2, i]), row
    assert json.loads(row["j"]) == {"k": i}
    async with conn.transaction():
        await conn.execute(f"INSERT INTO {T}(id, v) VALUES ($1, $2)", i, f"v{i}")
        assert await conn.fetchval(f"SELECT v FROM {T} WHERE id = $1", i) == f"v{i}"
    try:
        await conn.execute(f"INSERT INTO {T}(id, v) VALUES ($1, $2)", i, "dup")
        raise AssertionError("no unique violation")
    except asyncpg.UniqueViolationError:
        pass
    assert await conn.fetchval(f"SELECT count(*) FROM {T} WHERE id = $1", i) == 1
    # A prepared statement object, run in several transactions.
    stmt = await conn.prepare(f"SELECT v FROM {T} WHERE id = $1")
    for _ in range(3):
        assert await stmt.fetchval(i) == f"v{i}"
    # A server-side cursor (a named portal fetched in pieces).
    async with conn.transaction():
        n = 0
        async for _ in conn.cursor("SELECT g FROM generate_series(1, 250) g", prefetch=50):
            n += 1
        assert n == 250, n
    await conn.executemany(f"INSERT INTO {T}(id, v) VALUES ($1, $2)",
                           [(1000 * i + k, "m") for k in range(1, 6)])
    assert await conn.fetchval(f"SELECT count(*) FROM {T} WHERE id > $1 AND id < $2",
                               1000 * i, 1000 * i + 10) == 5
    # Binary COPY.
    await conn.copy_records_to_table(T, records=[(100000 + 100 * i + k, "c") for k in range(10)],
                                     columns=["id", "v"])
    assert await conn.fetchval(f"SELECT count(*) FROM {T} WHERE v = 'c' AND id >= $1 AND id < $2",
                               100000 + 100 * i, 100000 + 100 * i + 10) == 10
    # Its settings hold for it alone, and a type of its search_path is introspected.
    await conn.execute(f"SET search_path TO {SCHEMA}, public")
    assert await conn.fetchval("SHOW search_path") == f"{SCHEMA}, public"
    assert await conn.fetchval("SELECT 'b'::mood") == "b"
    await conn.execute("RESET search_path")


async def main():
    setup = await asyncpg.connect(DSN)
    await setup.execute(
        f"DROP TABLE IF EXISTS {T}; CREATE TABLE {T}(id int PRIMARY KEY, v text);"
        f" DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};"
        f" CREATE TYPE {SCHEMA}.mood AS ENUM ('a', 'b')")
    await setup.close()

    # More tasks than pool connections: each release runs asyncpg's reset
    # (SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL).
    pool = await asyncpg.create_pool(DSN, min_size=2, max_size=10)

    async def task(i):
        async with pool.acquire() as conn:
            await one(conn, i)

    await asyncio.gather(*(task(i) for i in range(1, 41)))

    async with pool.acquire() as conn:
        assert await conn.fetchval(f"SELECT ARRAY['a','b']::{SCHEMA}.mood[]") == ["a", "b"]
        # A timed-out query is cancelled, and the connection goes on.
        try:
            await conn.execute("SELECT pg_sleep(5)", timeout=0.5)
            raise AssertionError("no timeout")
        except asyncio.TimeoutError:
            pass
        assert await conn.fetchval("SELECT 42") == 42

    # LISTEN through asyncpg's listener API, NOTIFY from a pooled connection.
    got = asyncio.get_running_loop().create_future()
    listener = await asyncpg.connect(DSN)
    channel = f"apg_chan_{TAG}"
    await listener.add_listener(channel, lambda *a: got.done() or got.set_result(a[3]))
    async with pool.acquire() as conn:
        await conn.execute(f"NOTIFY {channel}, 'hello'")
    assert await asyncio.wait_for(got, 10) == "hello"
    await listener.close()
    await pool.close()
    print("asyncpg ok")


asyncio.run(main())
