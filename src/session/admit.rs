//! The policy stage of the pipeline: before any message that runs SQL reaches a server, its
//! statements are checked against the access policy with the client's user, database and
//! search_path. A refused request runs nothing.
//!
//! Refusals keep PostgreSQL's semantics. Outside a transaction and before anything of the
//! batch was sent, pgward answers by itself. Otherwise (inside a transaction block, or
//! mid-batch) it also sends the server a statement that fails to parse, so the server's
//! transaction fails exactly as after an error of its own: the client gets 25P02 until
//! ROLLBACK, and an implicit transaction is rolled back.

use std::sync::Arc;

use crate::catalog::{parse_search_path, Snapshot, Source};
use crate::policy::{DecisionKey, Policy, Subject, Verdict, UNANALYSABLE};
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::{Frame, ProxyError};
use crate::route::Want;
use crate::sql::{Analysis, Kind};

use super::params::ROLE;
use super::pump::Pending;
use super::Session;

/// A client's search_path setting and role, owned (see `Session::name_context`).
pub(super) type NameContext = (Option<String>, Option<String>);

/// The policy subject of a session, and what it was made from.
pub(super) struct CachedSubject {
    /// The search_path setting and role it was made for.
    setting: NameContext,
    generation: u64,
    subject: Subject,
}

/// Sent to the server to fail its transaction after a refusal: a syntax error at Parse,
/// under a statement name no client uses (a failed Parse creates nothing).
const FAILING_PARSE_NAME: &str = "pgward_refused";
const FAILING_PARSE_SQL: &str = "pgward: permission denied";

impl Session {
    /// Whether a message runs SQL that may change session settings.
    fn changes_settings(&self, frame: &Frame) -> bool {
        messages::sql_text(frame).is_some_and(|sql| self.effects(sql).session)
    }

    /// Whether the statements these messages run may run. Err is the error to refuse them
    /// with (never fatal to the connection).
    pub(super) async fn admit(&mut self, frames: &[Frame]) -> Result<(), ProxyError> {
        // The common case, no policy, costs a flag's load and no reference count.
        if !self.state.policy_on() {
            return Ok(());
        }
        let Some(policy) = self.state.policy.load_full() else {
            return Ok(());
        };
        let mut analyses: Vec<Arc<Analysis>> = Vec::with_capacity(frames.len());
        let mut statements = 0;
        for frame in frames {
            // A malformed message is left to the pump, which closes the connection over it.
            let sql = match frame.tag() {
                tag::QUERY => messages::read_query(frame.body()).ok(),
                tag::PARSE => messages::read_parse(frame.body()).ok().map(|p| p.query),
                tag::BIND => {
                    // A name this request's own Parse creates is checked at that Parse.
                    if let Some(analysis) = self.bound_analysis(frame) {
                        statements += analysis.statements.len().max(1);
                        if !analyses.iter().any(|a| a.id == analysis.id) {
                            analyses.push(analysis);
                        }
                    }
                    continue;
                }
                // A fast-path function call by OID: nothing to analyse.
                tag::FUNCTION_CALL => {
                    return match policy.on_unparsed {
                        crate::config::OnUnparsed::Allow => Ok(()),
                        crate::config::OnUnparsed::Deny => {
                            Err(self.refused(UNANALYSABLE.into(), "call", "a function by OID"))
                        }
                    };
                }
                _ => None,
            };
            let Some(sql) = sql else { continue };
            let analysis = self.analyze(sql);
            statements += analysis.statements.len().max(1);
            if !analyses.iter().any(|a| a.id == analysis.id) {
                analyses.push(analysis);
            }
        }
        if analyses.is_empty() {
            return Ok(());
        }
        // A SET earlier in this transaction (or this same request) may have moved the
        // search_path: unqualified names then count for every schema that has them.
        let path_certain = !(self.settings_unknown
            || (self.server.is_some() && self.link.session_dirty)
            || (statements > 1 && frames.iter().any(|f| self.changes_settings(f))));
        let (entry, mut snapshot) = self.current_snapshot().await?;
        for analysis in &analyses {
            let mut subject = self.subject(&snapshot, path_certain);
            let mut key = Policy::key_of(&subject, analysis, &snapshot);
            if self.allowed_last(&policy, &key) {
                self.note_schema_change(analysis);
                continue;
            }
            let verdict = match policy.decide(&subject, analysis, &snapshot, false) {
                Some(verdict) => verdict,
                None => {
                    if let Some(source) = self.catalog_source() {
                        snapshot = entry.after_miss(snapshot, &source).await;
                    }
                    subject = self.subject(&snapshot, path_certain);
                    key = Policy::key_of(&subject, analysis, &snapshot);
                    policy
                        .decide(&subject, analysis, &snapshot, true)
                        .expect("a final answer")
                }
            };
            if let Verdict::Deny(denial) = verdict {
                return Err(self.refused(denial.message.clone(), denial.action, &denial.object));
            }
            self.known.get_mut().allowed = Some((Arc::downgrade(&policy), key));
            self.note_schema_change(analysis);
        }
        Ok(())
    }

    /// Whether `policy` (not one it replaced) allowed this client the decision `key` last.
    fn allowed_last(&self, policy: &Arc<Policy>, key: &DecisionKey) -> bool {
        let last = self.known.get().allowed.as_ref();
        last.is_some_and(|(p, k)| p.as_ptr() == Arc::as_ptr(policy) && k == key)
    }

    /// The catalog entry of this client's database and login, and its current snapshot
    /// (loaded now if there is none yet; refreshed in the background when due).
    pub(super) async fn current_snapshot(
        &mut self,
    ) -> Result<(Arc<crate::catalog::Entry>, Arc<Snapshot>), ProxyError> {
        let (catalogs, info, user) = (&self.state.catalogs, &self.client.info, &self.pool_user);
        let entry = self
            .known
            .get_mut()
            .catalog
            .get_or_insert_with(|| catalogs.entry(&info.database, user))
            .clone();
        let snapshot = match entry.current(self.rt.config.policy.catalog_refresh) {
            (Some(snapshot), false) => snapshot,
            (Some(snapshot), true) => {
                if let Some(source) = self.catalog_source() {
                    entry.refresh_in_background(source);
                }
                snapshot
            }
            (None, _) => {
                let source = self.catalog_source().ok_or_else(|| {
                    ProxyError::ServerUnavailable("no backend to read the catalog from".into())
                })?;
                entry.first(&source).await.map_err(|e| {
                    tracing::warn!(client = self.client.info.id, error = %e, database = %self.client.info.database, "cannot read the catalog");
                    ProxyError::ServerUnavailable(e.to_string())
                })?
            }
        };
        Ok((entry, snapshot))
    }

    /// A snapshot for column encryption to plan `analysis` with (fresh when it names a
    /// relation the current one lacks), and whether the client's search_path is certain.
    pub(super) async fn snapshot_for(
        &mut self,
        analysis: &Analysis,
    ) -> Result<(Arc<Snapshot>, bool), ProxyError> {
        let path_certain = !(self.settings_unknown
            || (self.server.is_some() && self.link.session_dirty)
            || (analysis.statements.len() > 1
                && analysis.statements.iter().any(|s| s.kind == Kind::Set)));
        let (entry, snapshot) = self.current_snapshot().await?;
        let missing = analysis.statements.iter().flat_map(|s| &s.tables).any(|t| {
            !t.is_database()
                && match &t.schema {
                    Some(schema) => snapshot.columns(schema, &t.name).is_none(),
                    None => !snapshot.has_relation_named(&t.name),
                }
        });
        if !missing {
            return Ok((snapshot, path_certain));
        }
        match self.catalog_source() {
            Some(source) => Ok((entry.after_miss(snapshot, &source).await, path_certain)),
            None => Ok((snapshot, path_certain)),
        }
    }

    /// DDL (or what may be DDL) marks the catalog stale: now, and again when its transaction
    /// ends (a refresh in between would not see the change yet).
    pub(super) fn note_schema_change(&mut self, analysis: &Analysis) {
        if !analysis.understood() || analysis.statements.iter().any(|s| s.kind == Kind::Ddl) {
            self.state.catalogs.invalidate(&self.client.info.database);
            self.known.get_mut().catalog_dirty = true;
        }
    }

    /// Logs and counts a refusal; the log names the action and object, never values.
    pub(super) fn refused(&self, message: String, action: &str, object: &str) -> ProxyError {
        tracing::warn!(client = self.client.info.id, user = %self.client.info.user, database = %self.client.info.database, action, object, "policy denied a statement");
        crate::metrics::policy_denied();
        ProxyError::PermissionDenied(message)
    }

    /// The analysis of the statement a Bind names, when this client prepared it earlier.
    fn bound_analysis(&self, frame: &Frame) -> Option<Arc<Analysis>> {
        let mut r = Reader::new(frame.body());
        r.cstr().ok()?;
        let name = r.cstr().ok()?;
        self.known.peek()?.analyses.get(name).cloned()
    }

    /// What unqualified names depend on: the client's search_path setting and its role
    /// (SET ROLE), each None while the client has not set it.
    pub(super) fn name_context(&self) -> (Option<&String>, Option<&String>) {
        (self.wanted.get("search_path"), self.wanted.get(ROLE))
    }

    /// The schemas unqualified names resolve in, as PostgreSQL resolves them for this client:
    /// its search_path setting, else the login's default, with `$user` the role it runs as.
    pub(super) fn search_path(&self, snapshot: &Snapshot) -> Vec<String> {
        let (setting, role) = self.name_context();
        let user = role.map_or(&*self.pool_user, String::as_str);
        match (setting, role, &snapshot.default_search_path_setting) {
            (Some(value), ..) => parse_search_path(value, user),
            (None, Some(_), Some(default)) => parse_search_path(default, user),
            (None, ..) => snapshot.default_search_path.clone(),
        }
    }

    /// Who asks, with the client's search_path (see `search_path`). Kept between statements
    /// until the setting, the role or the catalog copy changes.
    pub(super) fn subject(&mut self, snapshot: &Snapshot, path_certain: bool) -> Subject {
        let (setting, role) = self.name_context();
        let current = self.known.get().subject.as_ref().is_some_and(|cached| {
            cached.generation == snapshot.generation
                && cached.setting.0.as_ref() == setting
                && cached.setting.1.as_ref() == role
        });
        if !current {
            let setting = (setting.cloned(), role.cloned());
            let search_path = self.search_path(snapshot);
            self.known.get_mut().subject = Some(CachedSubject {
                setting,
                generation: snapshot.generation,
                subject: Subject::new(
                    &self.client.info.user,
                    &self.client.info.database,
                    search_path,
                    true,
                ),
            });
        }
        let cached = &self.known.get().subject.as_ref().expect("just set").subject;
        if path_certain {
            cached.clone()
        } else {
            cached.uncertain()
        }
    }

    /// Where to read the catalog: the primary, else any usable backend.
    fn catalog_source(&self) -> Option<Source> {
        let router = &self.rt.router;
        let idx = router
            .pick(Want::Primary, 0, |_| 0)
            .or_else(|_| router.pick(Want::Read { min_lsn: 0 }, 0, |_| 0))
            .ok()?;
        Some(Source {
            target: router.backends[idx].target.clone(),
            user: self.pool_user.to_string(),
            credential: (*self.pool_credential).clone(),
            database: self.client.info.database.clone(),
        })
    }

    /// Remembers the analysis of a statement the client prepares (for checks at Bind). A
    /// name the client holds keeps its analysis: PostgreSQL refuses the Parse (session mode)
    /// and the name keeps naming the statement that analysis is of.
    pub(super) fn note_prepared(&mut self, name: &str, sql: &[u8]) {
        if self.state.policy_on() {
            let analysis = self.analyze(sql);
            let analyses = &mut self.known.get_mut().analyses;
            if name.is_empty() || !analyses.contains_key(name) {
                analyses.insert(name.to_owned(), analysis);
            }
        }
    }

    /// Refuses a message that arrived while a server is attached (see the module doc).
    pub(super) fn refuse_attached(&mut self, frame: &Frame, err: ProxyError) {
        let fail_server = self.link.tx_status != b'I' || self.link.in_batch;
        if fail_server {
            self.send_failing_parse();
        }
        if frame.tag() == tag::QUERY {
            if fail_server {
                messages::frontend(self.server_mut().writer.buffer(), tag::SYNC, |_| {});
                self.link.queue.push_back(Pending::HiddenSync);
            }
            self.push_error_reply(err, true);
        } else {
            self.refuse(err);
        }
        self.reply_ready();
    }

    fn send_failing_parse(&mut self) {
        let server = self.server_mut().writer.buffer();
        messages::write_parse(
            server,
            FAILING_PARSE_NAME,
            FAILING_PARSE_SQL.as_bytes(),
            &[0, 0],
        );
        self.link.queue.push_back(Pending::Hidden);
    }
}
