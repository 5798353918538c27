//! Access policy: may this user run this statement? casbin rules over requests
//! `(sub, db, tbl, col, act)`, one per table and action plus one per column used; every one
//! must be allowed. Deny beats allow and anything not allowed is denied (the model says so).
//!
//! Input: the statement analysis, the catalog snapshot and who asks (user, database,
//! search_path). Output: allow, or deny with the message the client reads. Verdicts are
//! cached per (analysis, catalog snapshot, subject), so a repeated statement costs one
//! lookup; a new policy (reload) starts with an empty cache.

mod files;
pub mod requests;

use std::path::PathBuf;
use std::sync::Arc;

use casbin::{CoreApi, DefaultModel, Enforcer, FileAdapter};
use moka::sync::Cache;

use crate::catalog::Snapshot;
use crate::config::{OnUnparsed, PolicyConfig};
use crate::sql::Analysis;
use requests::{Lookup, Request};

/// Verdicts kept per policy.
const DECISION_CACHE_ENTRIES: u64 = 100_000;

/// The message of every statement refused because it could not be analysed.
pub const UNANALYSABLE: &str = "pgward: permission denied: statement could not be analysed";

#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PolicyError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The client's message, and for the log: action and object (never values).
    Deny(Arc<Denial>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Denial {
    pub message: String,
    pub action: &'static str,
    pub object: String,
}

/// Who asks, and how their unqualified names resolve. Cheap to clone: a session makes one
/// and keeps it while its search_path stays the same.
#[derive(Debug, Clone)]
pub struct Subject {
    who: Arc<Who>,
    /// false when the client may have changed its search_path in a way pgward has not read
    /// back yet: unqualified names then stand for every relation of that name.
    pub path_certain: bool,
}

/// The part of a subject that verdicts are cached by (with the analysis and catalog copy).
#[derive(Debug)]
struct Who {
    user: String,
    database: String,
    search_path: Vec<String>,
    /// Of the three above, worked out once: a verdict is looked up for every statement.
    hash: u64,
}

impl PartialEq for Who {
    fn eq(&self, other: &Who) -> bool {
        self.hash == other.hash
            && self.user == other.user
            && self.database == other.database
            && self.search_path == other.search_path
    }
}

impl Eq for Who {}

impl std::hash::Hash for Who {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Subject {
    pub fn new(user: &str, database: &str, search_path: Vec<String>, path_certain: bool) -> Self {
        Subject {
            who: Arc::new(Who {
                hash: who_hash(user, database, &search_path),
                user: user.to_owned(),
                database: database.to_owned(),
                search_path,
            }),
            path_certain,
        }
    }

    /// The same subject with its search_path in doubt.
    pub fn uncertain(&self) -> Subject {
        Subject {
            who: self.who.clone(),
            path_certain: false,
        }
    }

    pub fn user(&self) -> &str {
        &self.who.user
    }

    pub fn database(&self) -> &str {
        &self.who.database
    }

    pub fn search_path(&self) -> &[String] {
        &self.who.search_path
    }
}

/// Keyed per process, as a HashMap's hasher is: a search_path is the client's to choose.
fn who_hash(user: &str, database: &str, search_path: &[String]) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
    KEYS.get_or_init(std::hash::RandomState::new)
        .hash_one((user, database, search_path))
}

/// What a verdict is cached by: from one `Policy`, equal keys get equal verdicts.
#[derive(PartialEq, Eq, Hash)]
pub struct DecisionKey {
    analysis: u64,
    generation: u64,
    path_certain: bool,
    who: Arc<Who>,
}

/// A loaded model and policy.
pub struct Policy {
    enforcer: Enforcer,
    pub on_unparsed: OnUnparsed,
    decisions: Cache<DecisionKey, Verdict, crate::ClientKeyHasher>,
}

impl Policy {
    /// Loads and validates `[policy]`'s model and policy files.
    pub async fn load(config: &PolicyConfig) -> Result<Policy, PolicyError> {
        let model_text = files::read(&config.model)?;
        let shape = files::check_model(&config.model, &model_text)?;
        files::check_policy(&config.policy, &files::read(&config.policy)?, &shape)?;
        let model = DefaultModel::from_str(&model_text)
            .await
            .map_err(|e| files::error(&config.model, None, e))?;
        let adapter = FileAdapter::new(config.policy.clone());
        let enforcer = Enforcer::new(model, adapter)
            .await
            .map_err(|e| files::error(&config.policy, None, e))?;
        // A matcher that does not evaluate would deny everything: say so now.
        enforcer
            .enforce(("", "", "", "", ""))
            .map_err(|e| files::error(&config.model, None, e))?;
        Ok(Policy {
            enforcer,
            on_unparsed: config.on_unparsed,
            decisions: Cache::builder()
                .max_capacity(DECISION_CACHE_ENTRIES)
                .build_with_hasher(Default::default()),
        })
    }

    /// The verdict on `analysis` for `subject`. None when a relation it names is missing
    /// from `snapshot` and `final_answer` is false: the caller may fetch a fresher catalog
    /// and ask again (with `final_answer`).
    pub fn decide(
        &self,
        subject: &Subject,
        analysis: &Analysis,
        snapshot: &Snapshot,
        final_answer: bool,
    ) -> Option<Verdict> {
        let key = Self::key_of(subject, analysis, snapshot);
        if let Some(verdict) = self.decisions.get(&key) {
            return Some(verdict);
        }
        let verdict = self.evaluate(subject, analysis, snapshot, final_answer)?;
        self.decisions.insert(key, verdict.clone());
        Some(verdict)
    }

    /// The key `decide` caches the verdict on `analysis` for `subject` by.
    pub fn key_of(subject: &Subject, analysis: &Analysis, snapshot: &Snapshot) -> DecisionKey {
        DecisionKey {
            analysis: analysis.id,
            generation: snapshot.generation,
            path_certain: subject.path_certain,
            who: subject.who.clone(),
        }
    }

    fn evaluate(
        &self,
        subject: &Subject,
        analysis: &Analysis,
        snapshot: &Snapshot,
        final_answer: bool,
    ) -> Option<Verdict> {
        if !analysis.understood() && self.on_unparsed == OnUnparsed::Deny {
            return Some(Verdict::Deny(Arc::new(Denial {
                message: UNANALYSABLE.into(),
                action: "run",
                object: "an unanalysable statement".into(),
            })));
        }
        let lookup = Lookup {
            snapshot,
            path: subject.search_path(),
            path_certain: subject.path_certain,
        };
        // Every statement of the text is checked before any of it runs.
        let mut all = Vec::new();
        // Under on_unparsed = allow, what is understood is still checked.
        for info in analysis.statements.iter().filter(|s| s.understood) {
            let (requests, missing) = requests::requests(info, &lookup);
            if missing && !final_answer {
                return None;
            }
            all.extend(requests);
        }
        // Table-level requests first, so the message names the table when both are denied.
        all.sort_by(|a, b| (a.col != "*", a).cmp(&(b.col != "*", b)));
        all.dedup();
        for request in &all {
            if !self.allows(subject, request) {
                return Some(Verdict::Deny(Arc::new(denial(subject, request))));
            }
        }
        Some(Verdict::Allow)
    }

    /// Whether `subject` may do `act` on column `col` of `tbl` (`schema.table`): one request,
    /// not cached (column encryption asks about `decrypt` once per plan).
    pub fn may(&self, subject: &Subject, tbl: &str, col: &str, act: &str) -> bool {
        let args = (subject.user(), subject.database(), tbl, col, act);
        match self.enforcer.enforce(args) {
            Ok(allowed) => allowed,
            Err(e) => {
                tracing::error!(error = %e, "policy evaluation failed; denying");
                false
            }
        }
    }

    fn allows(&self, subject: &Subject, request: &Request) -> bool {
        self.may(subject, &request.tbl, &request.col, request.act.as_str())
    }
}

fn denial(subject: &Subject, request: &Request) -> Denial {
    let object = match (request.tbl.as_str(), request.col.as_str()) {
        ("*", _) => format!("database {}", subject.database()),
        (tbl, "*") => tbl.to_owned(),
        (tbl, col) => format!("{tbl}.{col}"),
    };
    Denial {
        message: format!(
            "pgward: permission denied: {} may not {} {object}",
            subject.user(),
            request.act.as_str()
        ),
        action: request.act.as_str(),
        object,
    }
}

/// Validates `[policy]` files without building anything (for `pgward check`).
pub async fn check(config: &PolicyConfig) -> Result<(), PolicyError> {
    Policy::load(config).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{Action, Class, ColumnRef, Kind, RelName, StatementInfo};

    const POLICY: &str = "\
p, reader, appdb, public.*, *, select, allow
g, writer, reader
p, writer, appdb, public.*, *, insert, allow
p, no_pii, *, public.customers, ssn, *, deny
g, alice, writer
g, alice, no_pii
";

    async fn policy(text: &str, on_unparsed: OnUnparsed) -> (Policy, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("model.conf"),
            include_str!("../../policies/model.conf"),
        )
        .unwrap();
        std::fs::write(dir.path().join("policy.csv"), text).unwrap();
        let config = PolicyConfig {
            enabled: true,
            model: dir.path().join("model.conf"),
            policy: dir.path().join("policy.csv"),
            on_unparsed,
            ..PolicyConfig::default()
        };
        (Policy::load(&config).await.unwrap(), dir)
    }

    fn analysis(statements: Vec<StatementInfo>, parsed: bool) -> Analysis {
        static ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 40);
        Analysis {
            class: Class::Write,
            hint: None,
            route_setting: None,
            parsed,
            statements,
            id: ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// `SELECT <columns> FROM public.customers` or an INSERT into it.
    fn on_customers(action: Action, columns: &[&str]) -> StatementInfo {
        let mut info = StatementInfo::new(Kind::Select);
        let t = info.table(RelName {
            schema: Some("public".into()),
            name: "customers".into(),
        });
        info.access(t, action);
        for c in columns {
            info.use_column(
                ColumnRef::Of {
                    table: t,
                    name: (*c).into(),
                },
                action,
            );
        }
        info
    }

    /// One catalog copy for all tests (a new copy would be a new cache key).
    fn snapshot() -> &'static Snapshot {
        static SNAPSHOT: std::sync::OnceLock<Snapshot> = std::sync::OnceLock::new();
        SNAPSHOT.get_or_init(|| {
            Snapshot::from_rows(
                [
                    ("public", "customers", Some("id")),
                    ("public", "customers", Some("ssn")),
                ],
                vec!["public".into()],
            )
        })
    }

    fn verdict(policy: &Policy, user: &str, a: &Analysis) -> Verdict {
        let subject = Subject::new(user, "appdb", vec!["public".to_owned()], true);
        policy.decide(&subject, a, snapshot(), true).unwrap()
    }

    fn message(v: &Verdict) -> &str {
        match v {
            Verdict::Allow => "allow",
            Verdict::Deny(d) => &d.message,
        }
    }

    #[tokio::test]
    async fn roles_wildcards_and_deny_beating_allow() {
        let (p, _dir) = policy(POLICY, OnUnparsed::Deny).await;
        let read_ssn = analysis(vec![on_customers(Action::Select, &["id", "ssn"])], true);
        let insert = analysis(vec![on_customers(Action::Insert, &["id"])], true);
        assert_eq!(verdict(&p, "reader", &read_ssn), Verdict::Allow);
        assert_eq!(
            message(&verdict(&p, "reader", &insert)),
            "pgward: permission denied: reader may not insert public.customers"
        );
        assert_eq!(
            verdict(&p, "writer", &insert),
            Verdict::Allow,
            "writer inherits reader and adds insert"
        );
        assert_eq!(
            message(&verdict(&p, "alice", &read_ssn)),
            "pgward: permission denied: alice may not select public.customers.ssn"
        );
        assert_eq!(
            message(&verdict(&p, "nobody", &insert)),
            "pgward: permission denied: nobody may not insert public.customers"
        );
        // One denied statement of several denies the text.
        let both = analysis(
            vec![
                on_customers(Action::Select, &["id"]),
                on_customers(Action::Select, &["ssn"]),
            ],
            true,
        );
        assert!(matches!(verdict(&p, "alice", &both), Verdict::Deny(_)));
    }

    #[tokio::test]
    async fn unanalysable_text_follows_on_unparsed() {
        let unparsed = analysis(Vec::new(), false);
        let mut not_understood = on_customers(Action::Select, &["id"]);
        not_understood.understood = false;
        let partly = analysis(vec![not_understood], true);
        let (deny, _d1) = policy(POLICY, OnUnparsed::Deny).await;
        assert_eq!(message(&verdict(&deny, "reader", &unparsed)), UNANALYSABLE);
        assert_eq!(message(&verdict(&deny, "reader", &partly)), UNANALYSABLE);
        let (allow, _d2) = policy(POLICY, OnUnparsed::Allow).await;
        assert_eq!(verdict(&allow, "reader", &unparsed), Verdict::Allow);
        assert_eq!(verdict(&allow, "reader", &partly), Verdict::Allow);
        // The understood statements of a partly understood text are still checked.
        let mut not_understood = on_customers(Action::Select, &["id"]);
        not_understood.understood = false;
        let mixed = analysis(
            vec![not_understood, on_customers(Action::Insert, &["id"])],
            true,
        );
        assert!(matches!(
            verdict(&allow, "reader", &mixed),
            Verdict::Deny(_)
        ));
    }

    #[tokio::test]
    async fn verdicts_are_cached_per_subject() {
        let (p, _dir) = policy(POLICY, OnUnparsed::Deny).await;
        let a = analysis(vec![on_customers(Action::Select, &["ssn"])], true);
        assert_eq!(verdict(&p, "reader", &a), Verdict::Allow);
        assert!(matches!(verdict(&p, "alice", &a), Verdict::Deny(_)));
        p.decisions.run_pending_tasks();
        assert_eq!(p.decisions.entry_count(), 2);
        assert_eq!(verdict(&p, "reader", &a), Verdict::Allow);
        p.decisions.run_pending_tasks();
        assert_eq!(p.decisions.entry_count(), 2);
    }

    #[tokio::test]
    async fn a_missing_relation_asks_for_a_fresher_catalog_first() {
        let (p, _dir) = policy(POLICY, OnUnparsed::Deny).await;
        let mut info = StatementInfo::new(Kind::Select);
        let t = info.table(RelName {
            schema: None,
            name: "brand_new".into(),
        });
        info.access(t, Action::Select);
        let a = analysis(vec![info], true);
        let path = vec!["public".to_owned()];
        let subject = Subject::new("reader", "appdb", path, true);
        assert_eq!(p.decide(&subject, &a, snapshot(), false), None);
        assert_eq!(
            p.decide(&subject, &a, snapshot(), true),
            Some(Verdict::Allow)
        );
    }
}
