"""asyncpg's COPY into a table with encrypted columns (ssn, email), through pgward.

copy_records_to_table (binary format) and copy_to_table (text format) send their data right
behind the COPY statement, without waiting for the server's CopyInResponse. The Rust test
(encryption::asyncpg_copies_rows_it_sends_ahead_encrypted) checks what was stored; this script
checks what the client reads back. Usage: asyncpg_copy.py URI TABLE
"""

import asyncio
import io
import sys

import asyncpg

COLUMNS = ["id", "name", "ssn", "email"]


async def main(uri, table):
    conn = await asyncpg.connect(uri)
    # Several COPYs: each is a chance for its data to overtake the server's CopyInResponse.
    for start in range(1, 201, 25):
        records = [(i, f"name-{i}", f"apg-ssn-{i}", f"apg-{i}@example.com") for i in range(start, start + 25)]
        await conn.copy_records_to_table(table, records=records, columns=COLUMNS)

    text = "".join(f"{i}\tname-{i}\tapg-ssn-{i}\t\\N\n" for i in range(201, 301))
    await conn.copy_to_table(table, source=io.BytesIO(text.encode()), columns=COLUMNS)

    # The server refuses this COPY (a duplicate key) after its data: the client gets the
    # error and the connection stays usable.
    try:
        await conn.copy_records_to_table(table, records=[(1, "dup", "apg-dup-ssn", None)], columns=COLUMNS)
        raise SystemExit("a duplicate key was accepted")
    except asyncpg.UniqueViolationError:
        pass

    rows = await conn.fetch(f"SELECT id, ssn, email FROM {table} WHERE id IN (1, 200, 250) ORDER BY id")
    got = [tuple(r) for r in rows]
    want = [(1, "apg-ssn-1", "apg-1@example.com"), (200, "apg-ssn-200", "apg-200@example.com"), (250, "apg-ssn-250", None)]
    assert got == want, got
    assert await conn.fetchval(f"SELECT id FROM {table} WHERE ssn = $1", "apg-ssn-77") == 77

    out = io.BytesIO()
    await conn.copy_from_query(f"SELECT id, ssn, email FROM {table} WHERE id IN (2, 202) ORDER BY id", output=out, format="csv")
    assert out.getvalue() == b"2,apg-ssn-2,apg-2@example.com\n202,apg-ssn-202,\n", out.getvalue()
    await conn.close()
    print("asyncpg copy ok")


asyncio.run(main(sys.argv[1], sys.argv[2]))
