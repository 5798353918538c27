//! `pgward demo`: the embedded default. A throwaway primary and streaming replica, a sample
//! schema and config, pgward in front; everything is removed on Ctrl-C or SIGTERM.

use anyhow::Context as _;

use crate::cluster::{Cluster, ClusterOptions};
use crate::config::Config;
use crate::daemon::{Daemon, Signals};

const SAMPLE_SCHEMA: &str = "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, ssn text);
INSERT INTO customers (name, email, ssn)
  SELECT 'customer ' || i, NULL, lpad(i::text, 9, '0') FROM generate_series(1, 100) i;
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), created_at timestamptz DEFAULT now());
ALTER TABLE customers OWNER TO app;
ALTER TABLE orders OWNER TO app;
";

/// The demo's access policy: `app` may do anything; `analyst` may read, but never a
/// customer's ssn, and sees NULL for the encrypted email (no `decrypt` action).
const DEMO_POLICY: &str = "\
p, app, appdb, *, *, *, allow
p, analyst, appdb, public.*, *, select, allow
p, analyst, appdb, pg_catalog.*, *, select, allow
p, analyst, appdb, information_schema.*, *, select, allow
p, pii_blocked, *, public.customers, ssn, *, deny
g, analyst, pii_blocked
";

/// Fills the sample customers' emails with ciphertext, as if they had been written through
/// pgward (the plaintext never reaches PostgreSQL).
fn encrypt_sample_emails(cluster: &Cluster, config: &Config) -> anyhow::Result<()> {
    let crypto = crate::crypto::Crypto::from_config(&config.encryption, config.base_dir())?
        .context("the demo config designates a column")?;
    let email = crypto
        .column("public", "customers", "email")
        .context("customers.email is designated")?;
    let rows: Vec<String> = (1..=100)
        .map(|i| {
            format!(
                "({i}, '{}')",
                email.encrypt(format!("c{i}@example.com").as_bytes())
            )
        })
        .collect();
    let sql = format!(
        "UPDATE customers c SET email = v.email FROM (VALUES {}) v(id, email) WHERE c.id = v.id",
        rows.join(", ")
    );
    cluster.psql(cluster.primary.port, "appdb", &sql)?;
    Ok(())
}

pub async fn run(listen: &str) -> anyhow::Result<()> {
    println!("pgward demo: starting a PostgreSQL primary and one streaming replica...");
    let cluster = tokio::task::spawn_blocking(|| {
        Cluster::start(&ClusterOptions {
            replicas: 1,
            ..Default::default()
        })
    })
    .await?
    .context("could not start the demo PostgreSQL cluster")?;
    let result = serve(&cluster, listen).await;
    println!("pgward demo: stopping and removing the demo cluster");
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    result
}

async fn serve(cluster: &Cluster, listen: &str) -> anyhow::Result<()> {
    cluster.psql(cluster.primary.port, "appdb", SAMPLE_SCHEMA)?;
    let replica = &cluster.replicas[0];
    let files = tempfile::Builder::new().prefix("pgward-demo-").tempdir()?;
    let (model, policy) = (
        files.path().join("model.conf"),
        files.path().join("policy.csv"),
    );
    std::fs::write(&model, include_str!("../policies/model.conf"))?;
    std::fs::write(&policy, DEMO_POLICY)?;
    let key = files.path().join("demo.key");
    {
        use base64::Engine;
        let bytes: [u8; 32] = rand::random();
        std::fs::write(
            &key,
            base64::engine::general_purpose::STANDARD.encode(bytes),
        )?;
    }
    let quote = |p: &std::path::Path| toml::Value::String(p.to_string_lossy().into()).to_string();
    let text = format!(
        r#"
[server]
listen = "{listen}"

[auth]
method = "scram-sha-256"

[[users]]
name = "app"
password = "app-secret"

[[users]]
name = "analyst"
password = "analyst-secret"
backend_user = "app"
backend_password = "app-secret"

[[users]]
name = "admin"
password = "admin-secret"
backend_user = "app"
backend_password = "app-secret"

[policy]
enabled = true
model = {model}
policy = {policy}

[pool]
mode = "transaction"
size = 10

[[encryption.keys]]
id = "demo1"
material = {key}
active = true

[[encryption.columns]]
table = "public.customers"
column = "email"
mode = "deterministic"

[[backends]]
name = "primary"
host = "127.0.0.1"
port = {primary}
role = "primary"

[[backends]]
name = "replica1"
host = "127.0.0.1"
port = {replica}
role = "replica"
"#,
        primary = cluster.primary.port,
        replica = replica.port,
        model = quote(&model),
        policy = quote(&policy),
        key = toml::Value::String(format!("file:{}", key.display())),
    );
    // Beside the policy and key: the folder goes however the demo ends (a port in use, too).
    let path = files.path().join("pgward.toml");
    std::fs::write(&path, &text)?;
    let config = Config::load(&path)?;
    encrypt_sample_emails(cluster, &config)?;
    // The first read a visitor makes goes to the replica: it must already have the data.
    cluster.wait_replayed()?;
    let daemon = Daemon::bind(config).await?;
    let addr = daemon.listen_addr;
    let state = daemon.state.clone();
    println!();
    println!("pgward demo is running (config: {}).", path.display());
    println!(
        "  primary: 127.0.0.1:{}   replica: 127.0.0.1:{}",
        cluster.primary.port, replica.port
    );
    println!("Connect with:");
    println!(
        "  psql \"postgres://app:app-secret@{}:{}/appdb\"",
        addr.ip(),
        addr.port()
    );
    println!("Reads go to the replica, writes to the primary; see where with:");
    println!("  SELECT inet_server_port();   /* pgward:primary */ SELECT inet_server_port();");
    println!(
        "The access policy (policies in {}) lets analyst read but not the ssn column:",
        files.path().display()
    );
    println!(
        "  psql \"postgres://analyst:analyst-secret@{}:{}/appdb\" -c 'SELECT ssn FROM customers'",
        addr.ip(),
        addr.port()
    );
    println!(
        "customers.email is encrypted by pgward (deterministic, so WHERE email = '...' works):"
    );
    println!(
        "  psql \"postgres://app:app-secret@{}:{}/appdb\" -c \"SELECT id, email FROM customers WHERE email = 'c7@example.com'\"",
        addr.ip(),
        addr.port()
    );
    println!("PostgreSQL itself only ever sees ciphertext; look directly at the primary:");
    println!(
        "  psql \"postgres://app:app-secret@127.0.0.1:{}/appdb\" -c 'SELECT id, email FROM customers LIMIT 3'",
        cluster.primary.port
    );
    println!("The admin console (SHOW POOLS, SHOW CLIENTS, SHOW BACKENDS, RELOAD, ...):");
    println!(
        "  psql \"postgres://admin:admin-secret@{}:{}/pgward\" -c 'SHOW POOLS'",
        addr.ip(),
        addr.port()
    );
    println!("Press Ctrl-C to stop and remove everything.");
    let server = tokio::spawn(daemon.run(Signals::Ignore));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    state.shutdown.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server).await;
    Ok(())
}
