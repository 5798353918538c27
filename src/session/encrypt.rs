//! The column-encryption stage of the pipeline. On the way in, after the policy stage: the
//! literals and Bind values meant for designated columns become ciphertext, and statements
//! the stage cannot handle safely are refused (0A000). On the way out: DataRows and COPY rows
//! of designated columns are decrypted, or hidden from users without the `decrypt` action.
//!
//! Which result is being read follows the server's replies, in order: a RowDescription maps
//! the fields of what follows, a BindComplete gives its portal the map of the statement
//! bound, and an Execute reads with its portal's map. Requests that touch no designated
//! column carry no plan and their replies are never decoded.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, LazyLock};

use bytes::BufMut;

use crate::config::{PoolMode, WithoutDecrypt};
use crate::crypto::copy::{CopyIn, CopyOut};
use crate::crypto::plan::{self, Plan, Purpose, Reveal};
use crate::crypto::rows::{self, ResultMap};
use crate::crypto::{literal, Crypto};
use crate::policy::requests::Lookup;
use crate::protocol::frame::FrameRef;
use crate::protocol::messages::{self, tag, Reader};
use crate::protocol::{Frame, ProxyError};
use crate::sql::{Analysis, CompareOp};

use super::pump::Pending;
use super::Session;

/// Plans kept per session, by analysis; cleared when they may no longer hold.
const PLAN_CACHE_ENTRIES: usize = 256;

/// Column-encryption state of one session, allocated the first time it is written (when
/// encryption is on): a session that never meets encryption reads an empty one and holds a
/// null pointer (memory per idle client).
#[derive(Default)]
pub(super) struct CryptSlot(Option<Box<Crypt>>);

static NO_CRYPT: LazyLock<Crypt> = LazyLock::new(Crypt::default);

impl Deref for CryptSlot {
    type Target = Crypt;
    fn deref(&self) -> &Crypt {
        self.0.as_deref().unwrap_or(&NO_CRYPT)
    }
}

impl DerefMut for CryptSlot {
    fn deref_mut(&mut self) -> &mut Crypt {
        self.0.get_or_insert_with(Default::default)
    }
}

impl CryptSlot {
    /// Whether encryption is on for the request at hand; off allocates nothing.
    pub(super) fn set_enabled(&mut self, on: bool) {
        if on || self.0.is_some() {
            self.enabled = on;
        }
    }

    /// The plan of the Query just admitted, if any (without allocating the state).
    pub(super) fn take_next_query(&mut self) -> Option<Arc<Plan>> {
        self.0.as_mut()?.next_query.take()
    }
}

/// Column-encryption state of one session.
#[derive(Default)]
pub(super) struct Crypt {
    /// Columns are designated in the configuration of the last request: replies go through
    /// `decrypt_reply`.
    pub(super) enabled: bool,
    /// Plans by analysis id (None: the statement touches no designated column), valid for
    /// one catalog snapshot, search_path and role.
    cache: HashMap<u64, Option<Arc<Plan>>>,
    cache_key: Option<(u64, super::admit::NameContext, bool)>,
    /// The plan of each of the client's prepared statements, by name.
    statements: HashMap<String, Arc<Prepared>>,
    /// The plan of the Query just admitted, for its Pending entry.
    pub(super) next_query: Option<Arc<Plan>>,
    /// What each portal reads with (set in reply order).
    portals: HashMap<String, Bound>,
    /// The result map a Describe of a statement reported (set in reply order).
    described: HashMap<String, Option<Arc<ResultMap>>>,
    /// The result a simple Query is returning, and which statement of its text that is.
    current: Option<Arc<ResultMap>>,
    query_statement: usize,
    /// The data of the client's COPY FROM STDIN into designated columns: set up when the
    /// statement is sent (see `expect_copy_in`), ended by the client's CopyDone or CopyFail
    /// or its next statement; not by the server's replies, which may come before the data.
    copy_in: Option<CopyIn>,
    /// A COPY FROM failed (pgward could not encrypt a row, or the server refused the COPY):
    /// the client's remaining data is dropped.
    copy_in_failed: bool,
    copy_out: Option<CopyOut>,
    /// A value did not decrypt: the rest of the reply, up to ReadyForQuery, is dropped.
    failed: bool,
}

/// A prepared statement touching designated columns.
pub(super) struct Prepared {
    plan: Arc<Plan>,
    /// Parameters pgward added (see `add_key_params`).
    extra: Vec<rows::ExtraParams>,
    /// How many parameters the client knows of.
    client_params: usize,
}

/// What a portal reads with.
#[derive(Clone)]
struct Bound {
    plan: Arc<Plan>,
    map: Option<Arc<ResultMap>>,
}

/// What a Bind's reply sets up, carried in its Pending entry.
pub(super) struct BindCrypt {
    plan: Option<Arc<Plan>>,
    statement: String,
    portal: String,
}

/// What a Describe's reply sets up.
pub(super) struct DescribeCrypt {
    plan: Option<Arc<Plan>>,
    /// The parameters the client knows of, when pgward added some: ParameterDescription
    /// lists only those.
    params: Option<usize>,
    statement: Option<String>,
    portal: Option<String>,
}

impl Session {
    /// The encryption in force: the current configuration's, so a reload (a new active key)
    /// applies from the next statement.
    fn crypto(&self) -> Option<Arc<Crypto>> {
        self.state.runtime.load().crypto.clone()
    }

    /// Encrypts what these messages send for designated columns, in place. Err is the error
    /// to refuse them with.
    pub(super) async fn encrypt(&mut self, frames: &mut [Frame]) -> Result<(), ProxyError> {
        let crypto = if self.state.crypto_on() {
            self.crypto()
        } else {
            None
        };
        self.crypt.set_enabled(crypto.is_some());
        let Some(crypto) = crypto else {
            return Ok(());
        };
        // Boxed, so that a deployment without encryption does not carry its future's size
        // in every request's.
        Box::pin(self.encrypt_with(crypto, frames)).await
    }

    async fn encrypt_with(
        &mut self,
        crypto: Arc<Crypto>,
        frames: &mut [Frame],
    ) -> Result<(), ProxyError> {
        for frame in frames.iter_mut() {
            match frame.tag() {
                tag::QUERY => {
                    let sql = messages::read_query(frame.body())?.to_vec();
                    let plan = self.plan_for(&crypto, &sql).await?;
                    if let Some(plan) = &plan {
                        if copies_in(plan).count() > 1 {
                            return Err(self.crypto_refused(
                                "pgward: more than one COPY FROM STDIN into encrypted columns in one query; send them one at a time".into(),
                            ));
                        }
                        if !plan.literals.is_empty() {
                            let text = rewrite(plan, &sql)?;
                            *frame = Frame::build(tag::QUERY, |b| {
                                b.put_slice(&text);
                                b.put_u8(0);
                            });
                        }
                    }
                    self.crypt.next_query = plan;
                }
                tag::PARSE => {
                    let parse = messages::read_parse(frame.body())?;
                    // A name the client already holds: the Parse is refused as a duplicate (by
                    // pgward in transaction mode, by PostgreSQL in session mode) and the name
                    // keeps its statement, so it keeps that statement's plan. Dropping the plan
                    // would send the next Bind of that name unencrypted.
                    if self.holds_statement(parse.name) {
                        continue;
                    }
                    let (name, sql, types) = (
                        parse.name.to_owned(),
                        parse.query.to_vec(),
                        parse.param_types.to_vec(),
                    );
                    let plan = self.plan_for(&crypto, &sql).await?;
                    match plan {
                        Some(plan) => {
                            let mut text = None;
                            if !plan.literals.is_empty() {
                                text = Some(rewrite(&plan, &sql)?);
                            }
                            let current = text.as_deref().unwrap_or(&sql);
                            let added = add_key_params(&plan, current, &types)?;
                            let (extra, client_params) = match added {
                                Some((rewritten, extra, client_params)) => {
                                    text = Some(rewritten);
                                    (extra, client_params)
                                }
                                None => (Vec::new(), 0),
                            };
                            if let Some(text) = text {
                                *frame = Frame::build(tag::PARSE, |b| {
                                    b.put_slice(name.as_bytes());
                                    b.put_u8(0);
                                    b.put_slice(&text);
                                    b.put_u8(0);
                                    b.put_slice(&types);
                                });
                            }
                            let prepared = Prepared {
                                plan,
                                extra,
                                client_params,
                            };
                            self.crypt.statements.insert(name, Arc::new(prepared));
                        }
                        None => {
                            self.crypt.statements.remove(&name);
                        }
                    }
                }
                tag::BIND => {
                    let mut r = Reader::new(frame.body());
                    r.cstr_bytes()?;
                    let statement = r.name()?;
                    if let Some(prepared) = self.crypt.statements.get(statement) {
                        if !prepared.plan.params.is_empty() {
                            *frame =
                                rows::encrypt_bind(&prepared.plan, &prepared.extra, frame.body())?;
                        }
                    }
                }
                tag::CLOSE => {
                    let mut r = Reader::new(frame.body());
                    if r.u8()? == b'S' {
                        let name = r.name()?;
                        self.crypt.statements.remove(name);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Whether the client holds a prepared statement of this name (the unnamed one is always
    /// replaced by a Parse).
    fn holds_statement(&self, name: &str) -> bool {
        !name.is_empty()
            && (self.crypt.statements.contains_key(name)
                || (self.mode == PoolMode::Transaction && self.statements.contains_key(name)))
    }

    /// The plan of `sql` for this client now, None when it touches no designated column.
    async fn plan_for(
        &mut self,
        crypto: &Arc<Crypto>,
        sql: &[u8],
    ) -> Result<Option<Arc<Plan>>, ProxyError> {
        let analysis = self.analyze(sql);
        // The policy stage does this when it is on; encryption needs a current catalog too.
        if !self.state.policy_on() {
            self.note_schema_change(&analysis);
        }
        // Most statements name no designated table: decided without the catalog.
        if analysis.understood()
            && !analysis.statements.iter().any(|s| {
                s.tables
                    .iter()
                    .any(|t| crypto.tables().any(|(_, name)| name == t.name))
            })
        {
            return Ok(None);
        }
        let (snapshot, path_certain) = self.snapshot_for(&analysis).await?;
        let subject = self.subject(&snapshot, path_certain);
        let (search_path, role) = self.name_context();
        let key = (
            snapshot.generation,
            (search_path.cloned(), role.cloned()),
            path_certain,
        );
        if self.crypt.cache_key.as_ref() != Some(&key)
            || self.crypt.cache.len() >= PLAN_CACHE_ENTRIES
        {
            self.crypt.cache.clear();
            self.crypt.cache_key = Some(key);
        }
        if let Some(plan) = self.crypt.cache.get(&analysis.id) {
            if plan.as_ref().is_none_or(|p| p.literals.is_empty()) {
                return Ok(plan.clone());
            }
        }
        let policy = self.state.policy.load_full();
        let without = crypto.without_decrypt();
        let reveal = |schema: &str, table: &str, column: &str| -> Reveal {
            let Some(policy) = &policy else {
                return Reveal::Plaintext;
            };
            if policy.may(&subject, &format!("{schema}.{table}"), column, "decrypt") {
                return Reveal::Plaintext;
            }
            match without {
                WithoutDecrypt::Ciphertext => Reveal::Ciphertext,
                WithoutDecrypt::Null | WithoutDecrypt::Deny => Reveal::Null,
            }
        };
        let lookup = Lookup {
            snapshot: &snapshot,
            path: subject.search_path(),
            path_certain: subject.path_certain,
        };
        let made = plan::plan(crypto, &analysis, sql, &lookup, &snapshot, reveal)
            .map_err(|r| self.crypto_refused(r.0))?;
        let plan = match made {
            // Literal positions in a cached analysis are those of the text it was made from
            // (constants normalized): the edits need this exact text's own analysis.
            Some(plan) if !plan.literals.is_empty() => {
                self.crypt.cache.insert(analysis.id, Some(Arc::new(plan)));
                let exact = exact_analysis(&self.rt.analyzer, sql).await;
                plan::plan(crypto, &exact, sql, &lookup, &snapshot, reveal)
                    .map_err(|r| self.crypto_refused(r.0))?
                    .map(Arc::new)
            }
            other => {
                let plan = other.map(Arc::new);
                self.crypt.cache.insert(analysis.id, plan.clone());
                plan
            }
        };
        if let (Some(plan), WithoutDecrypt::Deny) = (&plan, without) {
            if let Some(denied) = denied_output(plan) {
                return Err(self.refused(
                    format!(
                        "pgward: permission denied: {} may not decrypt {denied}",
                        self.client.info.user
                    ),
                    "decrypt",
                    denied,
                ));
            }
        }
        Ok(plan)
    }

    /// Logs and counts a statement column encryption refuses (never its values).
    fn crypto_refused(&self, message: String) -> ProxyError {
        tracing::warn!(client = self.client.info.id, user = %self.client.info.user, database = %self.client.info.database, reason = %message, "column encryption refused a statement");
        ProxyError::Unsupported(message)
    }

    /// What an Execute's reply will read with: its portal, when encryption is on.
    pub(super) fn execute_crypt(&self, frame: &Frame) -> Option<Box<str>> {
        self.crypt.enabled.then_some(())?;
        let portal = Reader::new(frame.body()).cstr().ok()?;
        Some(portal.into())
    }

    pub(super) fn bind_crypt(&self, frame: &Frame) -> Option<Box<BindCrypt>> {
        self.crypt.enabled.then_some(())?;
        let mut r = Reader::new(frame.body());
        let portal = r.cstr().ok()?.to_owned();
        let statement = r.cstr().ok()?.to_owned();
        Some(Box::new(BindCrypt {
            plan: self
                .crypt
                .statements
                .get(&statement)
                .map(|p| p.plan.clone()),
            statement,
            portal,
        }))
    }

    pub(super) fn describe_crypt(&self, frame: &Frame) -> Option<Box<DescribeCrypt>> {
        self.crypt.enabled.then_some(())?;
        let mut r = Reader::new(frame.body());
        let kind = r.u8().ok()?;
        let name = r.cstr().ok()?.to_owned();
        Some(Box::new(if kind == b'S' {
            let prepared = self.crypt.statements.get(&name);
            DescribeCrypt {
                plan: prepared.map(|p| p.plan.clone()),
                params: prepared
                    .filter(|p| !p.extra.is_empty())
                    .map(|p| p.client_params),
                statement: Some(name),
                portal: None,
            }
        } else {
            DescribeCrypt {
                plan: self.crypt.portals.get(&name).map(|b| b.plan.clone()),
                params: None,
                statement: None,
                portal: Some(name),
            }
        }))
    }

    /// A statement that may be a COPY FROM STDIN is being sent (a Query with `plan`, or the
    /// Execute of a portal): the client may send its data right behind it, before the server
    /// has answered (asyncpg does), so the data's encryption is set up now, never later.
    /// Whatever copy state a previous statement left ends here.
    pub(super) fn expect_copy_in(&mut self, plan: Option<&Arc<Plan>>) {
        let copy = plan.and_then(|plan| {
            let statement = copies_in(plan).next()?;
            Some(CopyIn::new(plan.clone(), statement))
        });
        if copy.is_some() || self.crypt.copy_in.is_some() || self.crypt.copy_in_failed {
            self.crypt.copy_in = copy;
            self.crypt.copy_in_failed = false;
        }
    }

    /// The plan of `portal` (an Execute's) as its latest Bind left it, replied to or not.
    pub(super) fn portal_plan(&self, portal: &str) -> Option<Arc<Plan>> {
        for pending in self.link.queue.iter().rev() {
            if let Pending::Bind(Some(bind)) = pending {
                if bind.portal == portal {
                    return bind.plan.clone();
                }
            }
        }
        Some(self.crypt.portals.get(portal)?.plan.clone())
    }

    /// A client message during COPY FROM STDIN: CopyData encrypted row by row. None when
    /// the message is not sent at all.
    pub(super) fn copy_in_frame(&mut self, frame: Frame) -> Option<Frame> {
        if self.crypt.copy_in_failed {
            if frame.tag() != tag::COPY_DATA {
                self.crypt.copy_in_failed = false;
            }
            return None;
        }
        let Some(copy) = self.crypt.copy_in.as_mut() else {
            return Some(frame);
        };
        let mut out = Vec::new();
        let result = match frame.tag() {
            tag::COPY_DATA => copy.feed(frame.body(), &mut out),
            tag::COPY_DONE => copy.finish(&mut out),
            _ => {
                self.crypt.copy_in = None;
                return Some(frame);
            }
        };
        match result {
            Err(e) => {
                tracing::warn!(client = self.client.info.id, user = %self.client.info.user, error = %e, "COPY into a table with encrypted columns failed");
                self.crypt.copy_in = None;
                self.crypt.copy_in_failed = frame.tag() == tag::COPY_DATA;
                let message = e.to_string();
                Some(Frame::build(tag::COPY_FAIL, |b| {
                    b.put_slice(message.as_bytes());
                    b.put_u8(0);
                }))
            }
            Ok(()) if frame.tag() == tag::COPY_DONE => {
                self.crypt.copy_in = None;
                if !out.is_empty() {
                    let data = Frame::build(tag::COPY_DATA, |b| b.put_slice(&out));
                    self.server_mut().writer.queue(data.as_bytes());
                }
                Some(frame)
            }
            Ok(()) if out.is_empty() => None,
            Ok(()) => Some(Frame::build(tag::COPY_DATA, |b| b.put_slice(&out))),
        }
    }

    /// A server message seen by the encryption stage before it is relayed: the message to
    /// relay instead, if any (a DataRow decrypted), and whether to keep it from the client
    /// (after a value did not decrypt, the rest of the reply up to ReadyForQuery is withheld;
    /// the relay still keeps its books with it).
    pub(super) fn decrypt_reply(&mut self, frame: FrameRef) -> (Option<Frame>, bool) {
        let t = frame.tag();
        if self.crypt.failed {
            if t == b'Z' {
                self.crypt_reset();
                return (None, false);
            }
            return (None, true);
        }
        let outcome = match t {
            b'T' => self.on_row_description(frame).map(|()| None),
            b't' => match self.link.queue.front() {
                Some(Pending::Describe(Some(d))) if d.params.is_some() => {
                    rows::trim_parameter_description(frame.body(), d.params.unwrap_or(0)).map(Some)
                }
                _ => Ok(None),
            },
            b'2' => {
                if let Some(Pending::Bind(Some(bind))) = self.link.queue.front() {
                    let bound = bind.plan.clone().map(|plan| {
                        let map = match self.crypt.described.get(&bind.statement) {
                            Some(map) => map.clone(),
                            None => rows::planned_map(&plan, 0),
                        };
                        Bound { plan, map }
                    });
                    let portal = bind.portal.clone();
                    match bound {
                        Some(bound) => self.crypt.portals.insert(portal, bound),
                        None => self.crypt.portals.remove(&portal),
                    };
                }
                Ok(None)
            }
            b'D' => match self.reading_map() {
                Some(map) => rows::decrypt_row(&map, frame.body()).map(Some),
                None => Ok(None),
            },
            b'C' | b'I' => {
                if matches!(self.link.queue.front(), Some(Pending::Query(..))) {
                    self.crypt.query_statement += 1;
                    self.crypt.current = None;
                }
                self.crypt.copy_out = None;
                Ok(None)
            }
            b'H' => {
                self.crypt.copy_out = self
                    .copy_plan()
                    .map(|(plan, statement)| CopyOut::new(plan, statement));
                Ok(None)
            }
            b'd' => match self.crypt.copy_out.as_mut() {
                Some(copy) => copy
                    .row(frame.body())
                    .map(|row| Some(Frame::build(b'd', |b| b.put_slice(&row))))
                    .map_err(|e| ProxyError::Undecryptable(e.to_string())),
                None => Ok(None),
            },
            b'E' => {
                self.crypt.current = None;
                // The server ignores COPY data after an error; pgward drops what the client
                // still sends of it rather than pass it on unencrypted.
                if self.crypt.copy_in.take().is_some() {
                    self.crypt.copy_in_failed = true;
                }
                self.crypt.copy_out = None;
                Ok(None)
            }
            b'Z' => {
                self.crypt_reset();
                Ok(None)
            }
            _ => Ok(None),
        };
        match outcome {
            Ok(out) => (out, false),
            Err(err) => {
                tracing::warn!(client = self.client.info.id, user = %self.client.info.user, error = %err, "a stored value did not decrypt");
                messages::error_response(self.client_w.buffer(), &err, false);
                self.crypt.failed = true;
                // The message still keeps the relay's books; the client never sees it.
                (None, true)
            }
        }
    }

    /// At ReadyForQuery. The COPY FROM state stays: a client that sent its data right behind
    /// the statement may still be sending it (`expect_copy_in` ends it).
    fn crypt_reset(&mut self) {
        self.crypt.failed = false;
        self.crypt.current = None;
        self.crypt.query_statement = 0;
        self.crypt.copy_out = None;
    }

    fn on_row_description(&mut self, frame: FrameRef) -> Result<(), ProxyError> {
        match self.link.queue.front() {
            Some(Pending::Query(_, plan)) => {
                self.crypt.current = match plan {
                    Some(plan) => rows::result_map(plan, self.crypt.query_statement, frame.body())?,
                    None => None,
                };
            }
            Some(Pending::Describe(Some(describe))) => {
                let map = match &describe.plan {
                    Some(plan) => rows::result_map(plan, 0, frame.body())?,
                    None => None,
                };
                if let Some(statement) = &describe.statement {
                    self.crypt.described.insert(statement.clone(), map.clone());
                }
                if let (Some(portal), Some(plan)) = (&describe.portal, &describe.plan) {
                    let bound = Bound {
                        plan: plan.clone(),
                        map: map.clone(),
                    };
                    self.crypt.portals.insert(portal.clone(), bound);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The map the DataRow at hand is read with.
    fn reading_map(&self) -> Option<Arc<ResultMap>> {
        match self.link.queue.front()? {
            Pending::Query(..) => self.crypt.current.clone(),
            Pending::Execute(Some(portal)) => self.crypt.portals.get(&**portal)?.map.clone(),
            _ => None,
        }
    }

    /// The plan and statement of the COPY TO the server just started. (A COPY FROM's is set
    /// up when the statement is sent: `expect_copy_in`.)
    fn copy_plan(&self) -> Option<(Arc<Plan>, usize)> {
        let (plan, statement) = match self.link.queue.front()? {
            Pending::Query(_, Some(plan)) => (plan.clone(), self.crypt.query_statement),
            Pending::Execute(Some(portal)) => (self.crypt.portals.get(&**portal)?.plan.clone(), 0),
            _ => return None,
        };
        plan.statements.get(statement)?.copy.as_ref()?;
        Some((plan, statement))
    }
}

/// The statements of `plan` that are a COPY FROM STDIN into designated columns.
fn copies_in(plan: &Plan) -> impl Iterator<Item = usize> + '_ {
    plan.statements
        .iter()
        .enumerate()
        .filter(|(_, s)| s.copy.as_ref().is_some_and(|c| c.incoming))
        .map(|(i, _)| i)
}

/// The designated column some result of `plan` returns to a user who may not decrypt it.
fn denied_output(plan: &Plan) -> Option<&str> {
    plan.statements
        .iter()
        .flat_map(|s| {
            s.outputs
                .iter()
                .chain(s.copy.iter().flat_map(|c| c.columns.iter()))
        })
        .flatten()
        .find(|&&id| plan.reveal[id.index()] != Reveal::Plaintext)
        .map(|&id| plan.crypto.by_id(id).name())
}

/// `sql` analysed as it is, not through the normalizing cache.
async fn exact_analysis(analyzer: &crate::sql::Analyzer, sql: &[u8]) -> Arc<Analysis> {
    match std::str::from_utf8(sql) {
        Ok(text) => Arc::new(analyzer.analyze_exact(text).await),
        Err(_) => Arc::new(crate::sql::undecodable()),
    }
}

/// A statement's new text, the parameters pgward added, and how many the client knows of.
type KeyParams = (Vec<u8>, Vec<rows::ExtraParams>, usize);

/// A search on a parameter of a column under several keys (during a rotation) needs the
/// value's ciphertext under each: the parameter becomes a list of parameters, the extra ones
/// numbered after the client's (`col = $1` becomes `col = ANY (ARRAY[$1, $3])`), and Bind
/// fills them in. None when no parameter needs it. Returns the new text, the parameters
/// added, and how many parameters the client knows of.
fn add_key_params(
    plan: &Plan,
    sql: &[u8],
    param_types: &[u8],
) -> Result<Option<KeyParams>, ProxyError> {
    let searches: Vec<_> = plan
        .params
        .iter()
        .filter(|e| matches!(e.purpose, Purpose::Search { .. }))
        .filter(|e| plan.crypto.by_id(e.id).key_ids().count() > 1)
        .collect();
    if searches.is_empty() {
        return Ok(None);
    }
    let positions = plan::param_positions(sql);
    let declared = param_types
        .get(..2)
        .map_or(0, |n| i16::from_be_bytes([n[0], n[1]]).max(0) as usize);
    let used = positions.iter().map(|p| p.0 as usize).max().unwrap_or(0);
    let client_params = declared.max(used);
    let mut next = client_params;
    let mut edits = Vec::new();
    let mut extra = Vec::new();
    for edit in searches {
        let cipher = plan.crypto.by_id(edit.id);
        let n = edit.index as u32 + 1;
        let rotating = || {
            ProxyError::Unsupported(format!(
                "pgward: encrypted column {} is being rotated to a new key; write the comparison as `column = $n`, `column <> $n` or `column IN (...)`",
                cipher.name()
            ))
        };
        let mut at = positions.iter().filter(|p| p.0 == n);
        let (Some(&(_, start, end)), None) = (at.next(), at.next()) else {
            return Err(rotating());
        };
        let slots: Vec<usize> = (next..next + cipher.key_ids().count() - 1).collect();
        next += slots.len();
        let list = std::iter::once(n as usize)
            .chain(slots.iter().map(|s| s + 1))
            .map(|k| format!("${k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let Purpose::Search { op, value_first } = edit.purpose else {
            unreachable!("searches only")
        };
        let replacement = match (op, value_first) {
            (CompareOp::Eq, false) => format!("ANY (ARRAY[{list}])"),
            (CompareOp::NotEq, false) => format!("ALL (ARRAY[{list}])"),
            (CompareOp::In | CompareOp::NotIn, _) => list,
            _ => return Err(rotating()),
        };
        edits.push((start, end, replacement));
        extra.push(rows::ExtraParams {
            index: edit.index,
            slots,
        });
    }
    Ok(Some((splice(sql, edits)?, extra, client_params)))
}

/// `sql` with byte ranges replaced.
fn splice(sql: &[u8], mut edits: Vec<(usize, usize, String)>) -> Result<Vec<u8>, ProxyError> {
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(sql.len() + edits.len() * 64);
    let mut at = 0;
    for (start, end, replacement) in edits {
        if start < at {
            return Err(ProxyError::Unsupported(
                "pgward: overlapping values for encrypted columns".into(),
            ));
        }
        out.extend_from_slice(&sql[at..start]);
        out.extend_from_slice(replacement.as_bytes());
        at = end;
    }
    out.extend_from_slice(&sql[at..]);
    Ok(out)
}

/// `sql` with the plan's literals replaced by ciphertext.
fn rewrite(plan: &Plan, sql: &[u8]) -> Result<Vec<u8>, ProxyError> {
    let text = std::str::from_utf8(sql).map_err(|_| {
        ProxyError::Unsupported(
            "pgward: statements on encrypted columns must be UTF-8 (client_encoding)".into(),
        )
    })?;
    let mut edits = Vec::with_capacity(plan.literals.len());
    for edit in &plan.literals {
        let at = literal::offset(text, edit.line, edit.column).ok_or_else(|| {
            ProxyError::Unsupported(
                "pgward: cannot locate a literal for an encrypted column".into(),
            )
        })?;
        let found = literal::read(text, at).map_err(|r| ProxyError::Unsupported(r.0))?;
        let replacement = rows::literal_replacement(plan, edit.id, edit.purpose, &found.value)?;
        edits.push((found.start, found.end, replacement));
    }
    splice(sql, edits)
}
