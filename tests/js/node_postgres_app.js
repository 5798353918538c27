// A node-postgres application: what it does must work through pgward in transaction mode as it
// does against PostgreSQL. Usage: node node_postgres_app.js DSN TAG (TAG suffixes every object
// name, so the through-pgward and direct runs can share a database). Exits non-zero on failure.
const { Pool, Client } = require('pg');
const Cursor = require('pg-cursor');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');
const assert = require('assert');

const [dsn, tag] = process.argv.slice(2);
const T = `np_t_${tag}`;

async function one(pool, i) {
  const c = await pool.connect();
  try {
    let r = await c.query('SELECT $1::int + 1 AS n, $2::text AS t, $3::jsonb AS j, $4::int8 AS b',
      [i, `t${i}`, { k: i }, 5]);
    assert.deepStrictEqual(r.rows[0], { n: i + 1, t: `t${i}`, j: { k: i }, b: '5' });
    // A named prepared statement, reused.
    for (let k = 0; k < 3; k++) {
      r = await c.query({ name: 'twice', text: 'SELECT $1::int * 2 AS d', values: [i + k] });
      assert.strictEqual(r.rows[0].d, 2 * (i + k));
    }
    await c.query('BEGIN');
    await c.query(`INSERT INTO ${T}(id, v) VALUES ($1, $2)`, [i, `v${i}`]);
    r = await c.query(`SELECT v FROM ${T} WHERE id = $1`, [i]);
    assert.strictEqual(r.rows[0].v, `v${i}`);
    await c.query('COMMIT');
    await assert.rejects(c.query(`INSERT INTO ${T}(id, v) VALUES ($1, $2)`, [i, 'dup']),
      (e) => e.code === '23505');
    r = await c.query({ text: `SELECT id, v FROM ${T} WHERE id = $1`, values: [i], rowMode: 'array' });
    assert.deepStrictEqual(r.rows, [[i, `v${i}`]]);
    // Several statements in one simple query.
    r = await c.query('SELECT 1 AS a; SELECT 2 AS b');
    assert.strictEqual(r[1].rows[0].b, 2);
    // A cursor read in pieces (a named portal with a row limit).
    await c.query('BEGIN');
    const cursor = c.query(new Cursor('SELECT g FROM generate_series(1, 250) g'));
    let n = 0;
    let rows;
    do {
      rows = await cursor.read(60);
      n += rows.length;
    } while (rows.length);
    await cursor.close();
    await c.query('COMMIT');
    assert.strictEqual(n, 250);
    await c.query(`SET application_name = 'np${i}'`);
    r = await c.query('SHOW application_name');
    assert.strictEqual(r.rows[0].application_name, `np${i}`);
  } finally {
    c.release();
  }
}

(async () => {
  const setup = new Client(dsn);
  await setup.connect();
  await setup.query(`DROP TABLE IF EXISTS ${T}; CREATE TABLE ${T}(id int PRIMARY KEY, v text)`);
  await setup.end();

  const pool = new Pool({ connectionString: dsn, max: 10 });
  await Promise.all(Array.from({ length: 40 }, (_, i) => one(pool, i + 1)));

  // COPY in and out.
  let c = await pool.connect();
  const data = Array.from({ length: 1000 }, (_, k) => `${5000 + k}\tc\n`).join('');
  await pipeline(Readable.from([data]), c.query(copyFrom(`COPY ${T}(id, v) FROM STDIN`)));
  let out = '';
  await pipeline(c.query(copyTo(`COPY (SELECT id FROM ${T} WHERE v = 'c') TO STDOUT`)),
    new Writable({ write(chunk, _enc, done) { out += chunk; done(); } }));
  assert.strictEqual(out.trim().split('\n').length, 1000);
  c.release();

  // statement_timeout as a connection option: the server cancels, the client goes on.
  c = new Client({ connectionString: dsn, statement_timeout: 200 });
  await c.connect();
  await assert.rejects(c.query('SELECT pg_sleep(2)'), (e) => e.code === '57014');
  assert.strictEqual((await c.query('SELECT 7 AS x')).rows[0].x, 7);
  await c.end();

  // LISTEN / NOTIFY.
  const channel = `np_chan_${tag}`;
  const listener = new Client(dsn);
  await listener.connect();
  const got = new Promise((resolve) => listener.on('notification', (m) => resolve(m.payload)));
  await listener.query(`LISTEN ${channel}`);
  await pool.query(`NOTIFY ${channel}, 'hi'`);
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('no notification')), 10000));
  assert.strictEqual(await Promise.race([got, timeout]), 'hi');
  await listener.end();
  await pool.end();
  console.log('node-postgres ok');
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
