//! A lexical scan of SQL text for the few statement kinds that change server session state
//! (SET, RESET, DISCARD, DEALLOCATE, set_config(), LISTEN), that create state which pins a
//! client to its server connection in transaction pooling mode (temporary tables, WITH HOLD
//! cursors, advisory locks, ...), and for the names of LISTEN channels and SQL-level prepared
//! statements. It is no parser: it splits the text into tokens the way PostgreSQL's lexer does
//! (comments, string constants, quoted identifiers and dollar-quoted bodies are opaque) and
//! looks at the words of each statement. The flags over-approximate on purpose: they only
//! decide *when* pgward looks at the server's state, which is always the authority.

pub use crate::sql::contains_ignore_case;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effects {
    /// May change run-time parameters (SET, RESET, DISCARD, set_config()).
    pub session: bool,
    /// May drop prepared statements (DEALLOCATE, DISCARD).
    pub statements: bool,
    /// LISTEN or UNLISTEN (see `listen_text`).
    pub listen: bool,
    /// May take settings back to their reset values (RESET, DISCARD): the client's startup
    /// values must then be restored (PostgreSQL resets to them, pgward's server to its own).
    pub resets: bool,
    /// May open a transaction block (BEGIN, START TRANSACTION).
    pub begins: bool,
    /// May create session state that cannot move to another server connection: the first
    /// reason written in the text. A probe of the server decides whether the state exists.
    pub pin: Option<PinReason>,
    /// May release such state (DROP, DISCARD, CLOSE, DEALLOCATE, RESET, SET, the end of a
    /// transaction, pg_advisory_unlock*()); also set whenever `pin` is (ON COMMIT DROP).
    pub unpin_check: bool,
    /// Sends a notification (NOTIFY, pg_notify()).
    pub notify: bool,
    /// May name SQL-level prepared statements (a statement led by PREPARE, EXECUTE, EXPLAIN,
    /// CREATE or DEALLOCATE): worth a look with `sql_prepared`.
    pub sql_prepared: bool,
}

impl Effects {
    pub fn any(&self) -> bool {
        self.session || self.statements || self.listen
    }
}

/// Why a client in transaction pooling mode stays on its server connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    TempTable,
    CursorWithHold,
    AdvisoryLock,
    Load,
    SessionAuthorization,
    Prepare,
    /// A set_config() of a setting named by a parameter or expression (not by sqlscan).
    UnnamedSetting,
}

impl PinReason {
    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::TempTable => "temp_table",
            PinReason::CursorWithHold => "cursor_with_hold",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::Load => "load",
            PinReason::SessionAuthorization => "session_authorization",
            PinReason::Prepare => "prepare",
            PinReason::UnnamedSetting => "unnamed_setting",
        }
    }

    /// Human words for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            PinReason::TempTable => "temporary tables",
            PinReason::CursorWithHold => "WITH HOLD cursors",
            PinReason::AdvisoryLock => "session-level advisory locks",
            PinReason::Load => "LOAD",
            PinReason::SessionAuthorization => "SET SESSION AUTHORIZATION",
            PinReason::Prepare => "SQL PREPARE of a name pgward cannot read",
            PinReason::UnnamedSetting => "set_config() of a setting named by a parameter",
        }
    }
}

/// `sql` is in the client's encoding: the keywords looked for are ASCII in all of them.
/// No allocation; a text that mentions none of them is not lexed (`mentions_effects`).
pub fn effects(sql: &[u8]) -> Effects {
    if !mentions_effects(sql) {
        return Effects::default();
    }
    scan_effects(sql)
}

/// Whether any word of `sql`, in code, strings and comments alike, is one `scan_effects` acts
/// on: a keyword that leads or pins, or one containing set_config. A word the lexer finds is
/// a run of these same bytes with no `$` in it (no keyword has one, and a dollar-quoted
/// string can end right before a word), so a text without such a run has no effects. Most
/// statements have none, and this test costs a fraction of lexing them (a simple Query's
/// text is new each time, its literals differing).
fn mentions_effects(sql: &[u8]) -> bool {
    let mut rest = sql;
    while let Some(start) = rest.iter().position(|&b| WORD_BYTE[b as usize]) {
        rest = &rest[start..];
        let len = rest
            .iter()
            .position(|&b| !WORD_BYTE[b as usize])
            .unwrap_or(rest.len());
        let word = &rest[..len];
        rest = &rest[len..];
        let acted_on = match keyword(word) {
            // Words that only qualify a leading keyword (SET SESSION AUTHORIZATION, PREPARE
            // TRANSACTION, WITH HOLD) or matter to other scans.
            Kw::Other
            | Kw::All
            | Kw::Authorization
            | Kw::Function
            | Kw::On
            | Kw::Procedure
            | Kw::Session
            | Kw::Transaction
            | Kw::With => has_set_config(word),
            _ => true,
        };
        if acted_on {
            return true;
        }
    }
    false
}

/// The bytes of a word to `mentions_effects`: the lexer's identifier bytes but `$`.
const WORD_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = is_ident_cont(c) && c != b'$';
        b += 1;
    }
    table
};

/// `effects` by lexing the whole text.
fn scan_effects(sql: &[u8]) -> Effects {
    let mut fx = Effects::default();
    let mut lx = Lexer::new(sql);
    lx.watch_comments = true;
    // The first pin and the ordinal of the token it was found at.
    let mut pin: Option<(usize, PinReason)> = None;
    fn note(pin: &mut Option<(usize, PinReason)>, at: usize, why: PinReason) {
        if pin.is_none() {
            *pin = Some((at, why));
        }
    }
    let mut st = Stmt::default();
    // Where the first `PREPARE name` statement starts, and whether the last one's name is usable.
    // The first PREPARE whose name pgward cannot follow.
    let mut prepare_at: Option<usize> = None;
    let mut pos = 0usize;
    loop {
        let tok = lx.next();
        let t = match tok {
            None | Some(Tok::Semi) => {
                if st.k > 0 && st.lead == Kw::Prepare && !st.two_phase && !st.named {
                    prepare_at.get_or_insert(st.start);
                }
                if tok.is_none() {
                    break;
                }
                st = Stmt::default();
                continue;
            }
            Some(t) => t,
        };
        let kw = match t {
            Tok::Word(w) => {
                if has_set_config(w) {
                    fx.session = true;
                }
                keyword(w)
            }
            Tok::Quoted(q) => {
                if has_set_config(q) {
                    fx.session = true;
                }
                // "pg_temp".t and "pg_advisory_lock"(1) are what they say; "temp" is a column.
                match kw_lower(q) {
                    kw @ (Kw::PgTemp | Kw::AdvisoryLock | Kw::AdvisoryUnlock | Kw::PgNotify) => kw,
                    _ => Kw::Other,
                }
            }
            Tok::Literal(body) => {
                if has_set_config(body) {
                    fx.session = true;
                }
                Kw::Other
            }
            Tok::BadQuoted | Tok::Punct(_) | Tok::Semi => Kw::Other,
        };
        if st.k == 0 {
            st.start = pos;
            st.lead = if matches!(t, Tok::Word(_)) {
                kw
            } else {
                Kw::Other
            };
            match st.lead {
                Kw::Set => {
                    fx.session = true;
                    fx.unpin_check = true;
                }
                Kw::Reset => {
                    fx.session = true;
                    fx.resets = true;
                    fx.unpin_check = true;
                }
                Kw::Discard => {
                    fx.session = true;
                    fx.statements = true;
                    fx.resets = true;
                    fx.unpin_check = true;
                }
                Kw::Deallocate => {
                    fx.sql_prepared = true;
                    fx.statements = true;
                    fx.unpin_check = true;
                }
                Kw::Begin | Kw::Start => fx.begins = true,
                Kw::Listen | Kw::Unlisten => fx.listen = true,
                Kw::Prepare | Kw::Execute | Kw::Explain | Kw::Create => fx.sql_prepared = true,
                Kw::Notify => fx.notify = true,
                Kw::Load => note(&mut pin, pos, PinReason::Load),
                Kw::Drop | Kw::Close | Kw::Commit | Kw::End | Kw::Rollback | Kw::Abort => {
                    fx.unpin_check = true
                }
                _ => {}
            }
        } else if st.k == 1 && st.lead == Kw::Prepare {
            if kw == Kw::Transaction && matches!(t, Tok::Word(_)) {
                st.two_phase = true;
            } else {
                st.named = name(t).is_some_and(|n| n.ok());
            }
        }
        match kw {
            Kw::Temp | Kw::PgTemp if st.lead != Kw::Discard => {
                note(&mut pin, pos, PinReason::TempTable)
            }
            Kw::Hold if st.prev == Kw::With => note(&mut pin, pos, PinReason::CursorWithHold),
            Kw::Authorization if st.lead == Kw::Set && st.prev == Kw::Session => {
                note(&mut pin, pos, PinReason::SessionAuthorization)
            }
            Kw::SessionAuthorization if st.lead == Kw::Set => {
                note(&mut pin, pos, PinReason::SessionAuthorization)
            }
            Kw::AdvisoryLock => note(&mut pin, pos, PinReason::AdvisoryLock),
            Kw::AdvisoryUnlock => fx.unpin_check = true,
            Kw::PgNotify => fx.notify = true,
            _ => {}
        }
        st.prev = if matches!(t, Tok::Word(_)) {
            kw
        } else {
            Kw::Other
        };
        st.k += 1;
        pos += 1;
    }
    if let Some(at) = prepare_at {
        // A PREPARE pgward cannot follow by name stays on its connection.
        if pin.is_none_or(|(p, _)| at < p) {
            pin = Some((at, PinReason::Prepare));
        }
    }
    if lx.comment_set_config {
        fx.session = true;
    }
    fx.pin = pin.map(|(_, why)| why);
    fx.unpin_check |= fx.pin.is_some();
    fx
}

/// Custom settings (`class.name`: PostgreSQL's `pg_settings` does not list them, so they are
/// not read back with the others) that a text may set or reset, in lower case: `SET [SESSION |
/// LOCAL] a.b ...`, `RESET a.b`, `set_config('a.b', ...)`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CustomSettings {
    pub names: Vec<String>,
    /// A `set_config()` whose name is not a plain string constant (a parameter, an
    /// expression): which setting it changes cannot be known.
    pub unnamed: bool,
}

/// See [`CustomSettings`]. Only asked of texts whose `effects` say they change settings.
pub fn custom_settings(sql: &[u8]) -> CustomSettings {
    let mut out = CustomSettings::default();
    let mut lx = Lexer::new(sql);
    let mut toks = Vec::new();
    while let Some(t) = lx.next() {
        toks.push((t, lx.last_start));
    }
    let word = |i: usize| match toks.get(i) {
        Some((Tok::Word(w), _)) => keyword(w),
        _ => Kw::Other,
    };
    let mut statement_start = true;
    for i in 0..toks.len() {
        let (tok, _) = toks[i];
        if tok == Tok::Semi {
            statement_start = true;
            continue;
        }
        if std::mem::take(&mut statement_start) && matches!(word(i), Kw::Set | Kw::Reset) {
            let mut at = i + 1;
            if let (Kw::Set, Some((Tok::Word(w), _))) = (word(i), toks.get(at)) {
                if w.eq_ignore_ascii_case(b"session") || w.eq_ignore_ascii_case(b"local") {
                    at += 1;
                }
            }
            let mut parts = Vec::new();
            while let Some(part) = toks.get(at).and_then(|&(t, _)| name(t)) {
                parts.push(part);
                if toks.get(at + 1).map(|t| t.0) != Some(Tok::Punct(b'.')) {
                    break;
                }
                at += 2;
            }
            if parts.len() > 1 {
                // Setting names are looked up ignoring case, quoted or not.
                let parts: Option<Vec<String>> = parts
                    .into_iter()
                    .map(|p| p.into_string().map(|s| s.to_lowercase()))
                    .collect();
                out.names.extend(parts.map(|p| p.join(".")));
            }
        }
        // A DO block or function body: what it sets when it runs (PL/pgSQL statements
        // start after `;` like SQL ones, so its SETs are found the same way).
        if let (Tok::Literal(body), start) = toks[i] {
            if let Some(inner) = dollar_body(body).filter(|_| sql.get(start) == Some(&b'$')) {
                let nested = custom_settings(inner);
                out.names.extend(nested.names);
                out.unnamed |= nested.unnamed;
            }
        }
        let is_set_config = matches!(tok, Tok::Word(w) | Tok::Quoted(w) if w.eq_ignore_ascii_case(SET_CONFIG))
            && toks.get(i + 1).map(|t| t.0) == Some(Tok::Punct(b'('));
        if is_set_config {
            match toks.get(i + 2) {
                // A plain '...' constant without quotes or escapes in it.
                Some(&(Tok::Literal(body), start))
                    if sql.get(start) == Some(&b'\'')
                        && !body.iter().any(|&b| b == b'\'' || b == b'\\') =>
                {
                    if let Ok(name) = std::str::from_utf8(body) {
                        if name.contains('.') {
                            out.names.push(name.to_ascii_lowercase());
                        }
                    }
                }
                _ => out.unnamed = true,
            }
        }
    }
    out
}

/// The text inside `$tag$...$tag$`, None for anything else (a `$1` parameter).
fn dollar_body(literal: &[u8]) -> Option<&[u8]> {
    let tag_len = 1 + literal.get(1..)?.iter().position(|&b| b == b'$')? + 1;
    let tag = &literal[..tag_len];
    let end = literal.len().checked_sub(tag_len)?;
    (end >= tag_len && literal.ends_with(tag)).then(|| &literal[tag_len..end])
}

/// What one statement of a LISTEN relay does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenOp {
    Listen(String),
    Unlisten(String),
    UnlistenAll,
}

/// One LISTEN/UNLISTEN statement of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenStmt {
    /// Where it is in the text, from its first token to its last (no `;`).
    pub span: std::ops::Range<usize>,
    /// How many non-empty statements come before it: which CommandComplete of a simple
    /// Query is its own.
    pub ordinal: usize,
    pub op: ListenOp,
}

/// The LISTEN/UNLISTEN statements of a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenText {
    /// No LISTEN/UNLISTEN statement in the text.
    None,
    /// The LISTEN/UNLISTEN statements, in order, among any others.
    Found(Vec<ListenStmt>),
    /// A LISTEN/UNLISTEN pgward cannot read (malformed, or a channel name it cannot
    /// normalise): left to nobody, since running it on a shared connection would listen
    /// for whoever gets that connection next.
    Unreadable,
}

/// The LISTEN and UNLISTEN statements of `sql`. Channel names are normalised as PostgreSQL
/// does: unquoted ones lowercased (ASCII), quoted ones exact, both cut to 63 bytes. Allocates
/// only when the text has LISTEN/UNLISTEN statements.
pub fn listen_text(sql: &[u8]) -> ListenText {
    let mut lx = Lexer::new(sql);
    let mut found = Vec::new();
    let mut ordinal = 0usize;
    let mut k = 0usize;
    let mut lead = Kw::Other;
    let mut channel: Option<Tok> = None;
    let mut span = 0..0;
    loop {
        let tok = lx.next();
        match tok {
            None | Some(Tok::Semi) => {
                if k > 0 {
                    if matches!(lead, Kw::Listen | Kw::Unlisten) {
                        let op = match (lead, channel, k) {
                            (Kw::Unlisten, Some(Tok::Punct(b'*')), 2) => {
                                Some(ListenOp::UnlistenAll)
                            }
                            (_, Some(t), 2) => name(t).and_then(Name::into_string).map(|n| {
                                if lead == Kw::Listen {
                                    ListenOp::Listen(n)
                                } else {
                                    ListenOp::Unlisten(n)
                                }
                            }),
                            _ => None,
                        };
                        let Some(op) = op else {
                            return ListenText::Unreadable;
                        };
                        found.push(ListenStmt {
                            span: span.clone(),
                            ordinal,
                            op,
                        });
                    }
                    ordinal += 1;
                }
                if tok.is_none() {
                    break;
                }
                k = 0;
                lead = Kw::Other;
                channel = None;
            }
            Some(t) => {
                match k {
                    0 => {
                        span.start = lx.last_start;
                        lead = match t {
                            Tok::Word(w) => keyword(w),
                            _ => Kw::Other,
                        }
                    }
                    1 => channel = Some(t),
                    _ => {}
                }
                span.end = lx.i;
                k += 1;
            }
        }
    }
    match found.is_empty() {
        true => ListenText::None,
        false => ListenText::Found(found),
    }
}

/// The SQL-level prepared statements (PREPARE, EXECUTE, DEALLOCATE) a text names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqlPrepared {
    /// `PREPARE name [ (types) ] AS ...` statements in the text, in order: the name, and
    /// where the statement is in the text (first token to last, no `;`).
    pub prepares: Vec<(String, std::ops::Range<usize>)>,
    /// Names the text executes or explains: `EXECUTE name [(args)]`,
    /// `EXPLAIN [ANALYZE] [VERBOSE] [( options )] EXECUTE name`,
    /// `CREATE [TEMP] TABLE t AS EXECUTE name`, `CREATE TABLE t (cols) AS EXECUTE name ...`.
    pub uses: Vec<String>,
    /// `DEALLOCATE [PREPARE] name` / `DEALLOCATE [PREPARE] ALL`.
    pub deallocates: Vec<Deallocate>,
}

/// One DEALLOCATE statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocate {
    Name(String),
    All,
}

/// None (no allocation) when no statement's leading word is prepare/execute/explain/create/
/// deallocate or, for explain/create, when the statement has no `execute` token; else the
/// names found (None as well when no name could be read). Names are normalised as PostgreSQL
/// does (see [`listen_text`]); a name pgward cannot read (not UTF-8, longer than 63 bytes
/// and not ASCII, `U&"..."`) is left out (`effects` pins the client for it).
/// `PREPARE TRANSACTION` is ignored.
pub fn sql_prepared(sql: &[u8]) -> Option<SqlPrepared> {
    let mut lx = Lexer::new(sql);
    let mut out = SqlPrepared::default();
    let mut k = 0usize;
    let mut lead = Kw::Other;
    let mut prev = Kw::Other;
    let mut first: Option<Tok> = None;
    let mut second: Option<Tok> = None;
    let mut span = 0..0;
    loop {
        let tok = lx.next();
        let t = match tok {
            None | Some(Tok::Semi) => {
                if k > 0 {
                    match lead {
                        Kw::Prepare => {
                            let two_phase = first.is_some_and(|t| is_word(t, Kw::Transaction));
                            if let Some(n) = first.filter(|_| !two_phase).and_then(name) {
                                if let Some(n) = n.into_string() {
                                    out.prepares.push((n, span.clone()));
                                }
                            }
                        }
                        Kw::Deallocate => {
                            let d = match (first, second) {
                                (Some(t), _) if is_word(t, Kw::All) => Some(Deallocate::All),
                                (Some(p), Some(t)) if is_word(p, Kw::Prepare) => {
                                    if is_word(t, Kw::All) {
                                        Some(Deallocate::All)
                                    } else {
                                        name_string(t).map(Deallocate::Name)
                                    }
                                }
                                // `DEALLOCATE prepare`: a statement named "prepare".
                                (Some(t), _) => name_string(t).map(Deallocate::Name),
                                (None, _) => None,
                            };
                            out.deallocates.extend(d);
                        }
                        _ => {}
                    }
                }
                if tok.is_none() {
                    break;
                }
                k = 0;
                lead = Kw::Other;
                prev = Kw::Other;
                first = None;
                second = None;
                continue;
            }
            Some(t) => t,
        };
        let kw = match t {
            Tok::Word(w) => keyword(w),
            _ => Kw::Other,
        };
        if k == 0 {
            span.start = lx.last_start;
        }
        span.end = lx.i;
        match k {
            0 => lead = kw,
            1 => first = Some(t),
            2 => second = Some(t),
            _ => {}
        }
        match lead {
            Kw::Execute if k == 1 => out.uses.extend(name_string(t)),
            // Not EXECUTE FUNCTION f() in CREATE TRIGGER, nor GRANT EXECUTE ON in CREATE SCHEMA.
            Kw::Explain | Kw::Create
                if prev == Kw::Execute && !matches!(kw, Kw::Function | Kw::Procedure | Kw::On) =>
            {
                out.uses.extend(name_string(t))
            }
            _ => {}
        }
        prev = kw;
        k += 1;
    }
    let found = !(out.prepares.is_empty() && out.uses.is_empty() && out.deallocates.is_empty());
    found.then_some(out)
}

/// The state of the statement being scanned in [`effects`].
#[derive(Debug, Default)]
struct Stmt {
    /// Tokens seen so far.
    k: usize,
    /// Ordinal of its first token in the text.
    start: usize,
    /// Its first word (`Kw::Other` when it does not start with a keyword).
    lead: Kw,
    /// The previous token if it was a keyword.
    prev: Kw,
    /// PREPARE TRANSACTION.
    two_phase: bool,
    /// PREPARE with a name pgward can read.
    named: bool,
}

/// The words the scan looks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Kw {
    #[default]
    Other,
    Abort,
    All,
    Authorization,
    AdvisoryLock,
    AdvisoryUnlock,
    Begin,
    Close,
    Commit,
    Create,
    Deallocate,
    Discard,
    Drop,
    End,
    Execute,
    Explain,
    Function,
    Hold,
    Listen,
    Load,
    Notify,
    On,
    PgNotify,
    /// pg_temp, pg_temp_NNN
    PgTemp,
    Prepare,
    Procedure,
    Reset,
    Rollback,
    Session,
    SessionAuthorization,
    Set,
    Start,
    /// temp, temporary
    Temp,
    Transaction,
    Unlisten,
    With,
}

/// The keyword an unquoted word is, ignoring ASCII case. Most words are none, and most of
/// those are told apart by their first byte and length (`may_be_keyword`).
#[inline]
fn keyword(word: &[u8]) -> Kw {
    let mut buf = [0u8; 32];
    if word.len() > buf.len() || !may_be_keyword(word) {
        return Kw::Other;
    }
    for (d, s) in buf.iter_mut().zip(word) {
        *d = s.to_ascii_lowercase();
    }
    kw_lower(&buf[..word.len()])
}

/// Defines `kw_lower` and `SPELLINGS` from one list, so the quick test in `mentions_effects`
/// knows every spelling `kw_lower` does.
macro_rules! keywords {
    ($($($spelling:literal)|+ => $kw:ident,)*) => {
        /// The keyword `w` is, spelled in lower case.
        fn kw_lower(w: &[u8]) -> Kw {
            match w {
                $($($spelling)|+ => Kw::$kw,)*
                _ if is_pg_temp_n(w) => Kw::PgTemp,
                _ => Kw::Other,
            }
        }

        /// Every spelling `kw_lower` knows but `pg_temp_NNN`.
        const SPELLINGS: &[&[u8]] = &[$($($spelling,)+)*];
    };
}

keywords! {
    b"abort" => Abort,
    b"all" => All,
    b"authorization" => Authorization,
    b"begin" => Begin,
    b"close" => Close,
    b"commit" => Commit,
    b"create" => Create,
    b"deallocate" => Deallocate,
    b"discard" => Discard,
    b"drop" => Drop,
    b"end" => End,
    b"execute" => Execute,
    b"explain" => Explain,
    b"function" => Function,
    b"hold" => Hold,
    b"listen" => Listen,
    b"load" => Load,
    b"notify" => Notify,
    b"on" => On,
    b"pg_advisory_lock" | b"pg_advisory_lock_shared" | b"pg_try_advisory_lock" | b"pg_try_advisory_lock_shared" => AdvisoryLock,
    b"pg_advisory_unlock" | b"pg_advisory_unlock_shared" | b"pg_advisory_unlock_all" => AdvisoryUnlock,
    b"pg_notify" => PgNotify,
    b"pg_temp" => PgTemp,
    b"prepare" => Prepare,
    b"procedure" => Procedure,
    b"reset" => Reset,
    b"rollback" => Rollback,
    b"session" => Session,
    b"session_authorization" => SessionAuthorization,
    b"set" => Set,
    b"start" => Start,
    b"temp" | b"temporary" => Temp,
    b"transaction" => Transaction,
    b"unlisten" => Unlisten,
    b"with" => With,
}

/// A backend's temporary schema by its own name: pg_temp_NNN.
fn is_pg_temp_n(w: &[u8]) -> bool {
    w.len() > PG_TEMP_N.len()
        && w.starts_with(PG_TEMP_N)
        && w[PG_TEMP_N.len()..].iter().all(u8::is_ascii_digit)
}

const PG_TEMP_N: &[u8] = b"pg_temp_";

/// For each first byte, in either case, a bit per length (63 for 63 and longer) of the
/// words `keyword` may know: a word whose bit is clear is `Kw::Other` without a look at the
/// rest of it.
const KEYWORD_SHAPES: [u64; 256] = {
    const fn mark(table: &mut [u64; 256], first: u8, bits: u64) {
        table[first.to_ascii_lowercase() as usize] |= bits;
        table[first.to_ascii_uppercase() as usize] |= bits;
    }
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < SPELLINGS.len() {
        let s = SPELLINGS[i];
        mark(&mut table, s[0], 1 << shape_len(s.len()));
        i += 1;
    }
    // pg_temp_ and at least one digit.
    mark(&mut table, b'p', !0u64 << (PG_TEMP_N.len() + 1));
    table
};

const fn shape_len(len: usize) -> usize {
    if len < 63 {
        len
    } else {
        63
    }
}

/// Whether `word` may be a keyword (`KEYWORD_SHAPES`); when false, it is `Kw::Other`.
#[inline]
fn may_be_keyword(word: &[u8]) -> bool {
    match word.first() {
        Some(&first) => KEYWORD_SHAPES[first as usize] & (1 << shape_len(word.len())) != 0,
        None => false,
    }
}

fn is_word(t: Tok, kw: Kw) -> bool {
    matches!(t, Tok::Word(w) if keyword(w) == kw)
}

const SET_CONFIG: &[u8] = b"set_config";

/// Whether `b` has "set_config" in it, ignoring ASCII case.
#[inline]
fn has_set_config(b: &[u8]) -> bool {
    b.len() >= SET_CONFIG.len()
        && b.windows(SET_CONFIG.len())
            .any(|w| w[3] == b'_' && w.eq_ignore_ascii_case(SET_CONFIG))
}

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1); longer ones are cut.
const MAX_IDENT: usize = 63;

/// An identifier token, before normalisation.
#[derive(Debug, Clone, Copy)]
enum Name<'a> {
    /// Unquoted: lowercased.
    Bare(&'a [u8]),
    /// Quoted: the text between the quotes, `""` still doubled.
    Quoted(&'a [u8]),
}

fn name(t: Tok) -> Option<Name> {
    match t {
        Tok::Word(w) => Some(Name::Bare(w)),
        Tok::Quoted(q) => Some(Name::Quoted(q)),
        _ => None,
    }
}

fn name_string(t: Tok) -> Option<String> {
    name(t).and_then(Name::into_string)
}

impl Name<'_> {
    /// Whether [`Name::into_string`] gives a name, without allocating.
    fn ok(self) -> bool {
        let (text, len) = match self {
            Name::Bare(w) => (w, w.len()),
            Name::Quoted(q) => (q, q.len() - q.iter().filter(|&&b| b == b'"').count() / 2),
        };
        (len <= MAX_IDENT || text.is_ascii()) && std::str::from_utf8(text).is_ok()
    }

    /// The name as PostgreSQL stores it, or None when pgward cannot tell: not UTF-8, or too
    /// long to cut without knowing the character boundaries of the encoding.
    fn into_string(self) -> Option<String> {
        if !self.ok() {
            return None;
        }
        let mut bytes = match self {
            Name::Bare(w) => w.to_ascii_lowercase(),
            Name::Quoted(q) => {
                let mut out = Vec::with_capacity(q.len());
                let mut i = 0;
                while i < q.len() {
                    out.push(q[i]);
                    i += if q[i] == b'"' { 2 } else { 1 };
                }
                out
            }
        };
        bytes.truncate(MAX_IDENT);
        String::from_utf8(bytes).ok()
    }
}

/// A token of SQL text. Comments and white space are skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// An unquoted identifier or keyword.
    Word(&'a [u8]),
    /// A quoted identifier: its text between the quotes, `""` still doubled. Never empty.
    Quoted(&'a [u8]),
    /// A quoted identifier that names nothing pgward can read: unterminated, empty, `U&"..."`.
    BadQuoted,
    /// A string constant, dollar-quoted body, number or `$n` parameter: its text.
    Literal(&'a [u8]),
    Semi,
    /// Any other character: operators, brackets, `.`, `,`.
    Punct(u8),
}

/// Splits SQL text into tokens as PostgreSQL's lexer does (standard_conforming_strings on).
struct Lexer<'a> {
    sql: &'a [u8],
    i: usize,
    /// Where the last token returned begins.
    last_start: usize,
    /// Look for "set_config" in comments too (see `comment_set_config`).
    watch_comments: bool,
    /// A comment mentions set_config (kept from the substring test this scan replaced).
    comment_set_config: bool,
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c')
}

const fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

const fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            i: 0,
            last_start: 0,
            watch_comments: false,
            comment_set_config: false,
        }
    }

    fn at(&self, i: usize) -> Option<u8> {
        self.sql.get(i).copied()
    }

    /// Skips white space and comments (`/* */` nest).
    fn skip_blank(&mut self) {
        let sql = self.sql;
        while self.i < sql.len() {
            let start = self.i;
            match sql[self.i] {
                c if is_space(c) => {
                    self.i += 1;
                    continue;
                }
                b'-' if self.at(self.i + 1) == Some(b'-') => {
                    self.i = sql[self.i..]
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(sql.len(), |p| self.i + p);
                }
                b'/' if self.at(self.i + 1) == Some(b'*') => {
                    let mut depth = 0usize;
                    while self.i < sql.len() {
                        if sql[self.i] == b'/' && self.at(self.i + 1) == Some(b'*') {
                            depth += 1;
                            self.i += 2;
                        } else if sql[self.i] == b'*' && self.at(self.i + 1) == Some(b'/') {
                            depth -= 1;
                            self.i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else {
                            self.i += 1;
                        }
                    }
                }
                _ => return,
            }
            if self.watch_comments && has_set_config(&sql[start..self.i]) {
                self.comment_set_config = true;
            }
        }
    }

    /// From an opening quote `q` at `self.i` to after the closing one (a doubled one is part
    /// of the text; with `escapes`, so is a character after a backslash). The text between
    /// the quotes, and whether it was closed.
    fn quoted(&mut self, q: u8, escapes: bool) -> (&'a [u8], bool) {
        let sql = self.sql;
        self.i += 1;
        let start = self.i;
        while self.i < sql.len() {
            let c = sql[self.i];
            if escapes && c == b'\\' {
                self.i += 2;
            } else if c == q {
                if self.at(self.i + 1) == Some(q) {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return (&sql[start..self.i - 1], true);
                }
            } else {
                self.i += 1;
            }
        }
        self.i = sql.len();
        (&sql[start..], false)
    }

    fn quoted_ident(&mut self) -> Tok<'a> {
        match self.quoted(b'"', false) {
            (text, true) if !text.is_empty() => Tok::Quoted(text),
            _ => Tok::BadQuoted,
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_blank();
        let sql = self.sql;
        let start = self.i;
        self.last_start = start;
        let c = *sql.get(start)?;
        let tok = match c {
            b';' => {
                self.i += 1;
                Tok::Semi
            }
            b'\'' => Tok::Literal(self.quoted(b'\'', false).0),
            b'"' => self.quoted_ident(),
            b'$' => {
                let tag_end = sql[start + 1..]
                    .iter()
                    .position(|&b| !(is_ident_start(b) || b.is_ascii_digit()))
                    .map(|p| start + 1 + p);
                match (self.at(start + 1), tag_end) {
                    // $1: a parameter.
                    (Some(d), _) if d.is_ascii_digit() => {
                        self.i = tag_end.unwrap_or(sql.len());
                        Tok::Literal(&sql[start..self.i])
                    }
                    // $tag$ ... $tag$
                    (_, Some(end)) if sql[end] == b'$' => {
                        let tag = &sql[start..=end];
                        let body = end + 1;
                        self.i = sql[body..]
                            .iter()
                            .enumerate()
                            .filter(|&(_, &b)| b == b'$')
                            .find(|&(p, _)| sql[body + p..].starts_with(tag))
                            .map_or(sql.len(), |(p, _)| body + p + tag.len());
                        Tok::Literal(&sql[start..self.i])
                    }
                    _ => {
                        self.i += 1;
                        Tok::Punct(b'$')
                    }
                }
            }
            c if c.is_ascii_digit() => {
                self.i = sql[start..]
                    .iter()
                    .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'.'))
                    .map_or(sql.len(), |p| start + p);
                Tok::Literal(&sql[start..self.i])
            }
            c if is_ident_start(c) => {
                self.i = sql[start..]
                    .iter()
                    .position(|&b| !is_ident_cont(b))
                    .map_or(sql.len(), |p| start + p);
                let word = &sql[start..self.i];
                match (word, self.at(self.i), self.at(self.i + 1)) {
                    // E'...' takes backslash escapes; B'', X'', N'' are strings too.
                    ([e], Some(b'\''), _) if e.eq_ignore_ascii_case(&b'e') => {
                        Tok::Literal(self.quoted(b'\'', true).0)
                    }
                    ([p], Some(b'\''), _) if b"bBxXnN".contains(p) => {
                        Tok::Literal(self.quoted(b'\'', false).0)
                    }
                    // U&'...' and U&"..." (unicode escapes pgward does not decode).
                    ([u], Some(b'&'), Some(q @ (b'\'' | b'"')))
                        if u.eq_ignore_ascii_case(&b'u') =>
                    {
                        self.i += 1;
                        let (text, _) = self.quoted(q, false);
                        if q == b'"' {
                            Tok::BadQuoted
                        } else {
                            Tok::Literal(text)
                        }
                    }
                    _ => Tok::Word(word),
                }
            }
            c => {
                self.i += 1;
                Tok::Punct(c)
            }
        };
        Some(tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_custom_settings() {
        let names = |sql: &str| custom_settings(sql.as_bytes());
        let found = |v: &[&str], unnamed| CustomSettings {
            names: v.iter().map(|s| s.to_string()).collect(),
            unnamed,
        };
        assert_eq!(
            names("SET app.tenant_id = '42'"),
            found(&["app.tenant_id"], false)
        );
        assert_eq!(
            names("set session App.\"Tenant\" to 1; RESET request.jwt.claims; SET LOCAL x.y = 2"),
            found(&["app.tenant", "request.jwt.claims", "x.y"], false)
        );
        assert_eq!(
            names("SELECT pg_catalog.set_config('app.user', $1, false), set_config('work_mem', '1MB', false)"),
            found(&["app.user"], false)
        );
        assert_eq!(names("SELECT set_config($1, $2, false)"), found(&[], true));
        // Inside a DO block, by name or not.
        assert_eq!(
            names("DO $$BEGIN PERFORM set_config('app.t', '1', false); SET app.u = 2; END$$"),
            found(&["app.t", "app.u"], false)
        );
        assert_eq!(
            names("DO $body$ BEGIN PERFORM set_config(v, '1', false); END $body$"),
            found(&[], true)
        );
        assert_eq!(
            names("SELECT set_config('it''s.x', '1', false)"),
            found(&[], true)
        );
        // Not settings: a column named like one, an UPDATE's SET, a string.
        assert_eq!(names("SET search_path = a, b"), found(&[], false));
        assert_eq!(names("UPDATE t SET a.b = 1"), found(&[], false));
        assert_eq!(names("SELECT 'SET a.b = 1'"), found(&[], false));
    }

    #[test]
    fn finds_session_changes() {
        assert!(effects(b"SET search_path TO x").session);
        assert!(effects(b"select 1; /* c */ reset all").session);
        assert!(effects(b"select set_config('a.b', '1', false)").session);
        assert!(!effects(b"UPDATE t SET a = 1").session);
        assert!(!effects(b"select 'x; set a=1'").session);
        assert!(!effects(b"select $$; set a=1$$").session);
        assert!(!effects(b"select 1 -- ; set a = 1").session);
        let d = effects(b"DISCARD ALL");
        assert!(d.session && d.statements);
        assert!(effects(b"deallocate all").statements);
        assert!(effects(b"  LISTEN chan").listen);
        assert!(effects(b"select 1; BEGIN; insert into t values (1)").begins);
        assert!(effects(b"start transaction").begins);
        assert!(!effects(b"select 'begin'").begins);
        assert!(!effects(b"select $1, e'\\'; set'").session);
    }

    #[test]
    fn skips_only_texts_without_effects() {
        // Texts with and without effects, their keywords in strings, comments, quoted
        // names, dollar quotes and odd spellings: the quick test never hides an effect.
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
            "select a.id, b.name from a join b on a.id = b.id where b.created_at > now() - interval '1 day'",
            "UPDATE t SET a = 1",
            "select $$x$$temp",
            "select $q$a$q$set_config",
            "select a$set",
            "select 1.set",
            "select \"pg_temp\".t",
            "select \"PG_TEMP\".t",
            "select x from t -- begin",
            "select /* set_config */ 1",
            "select 'SET_CONFIG'",
            "declare c cursor with hold for select 1",
            "select pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(1)",
            "select pg_advisory_unlock_all()",
            "select pg_notify('c', 'x')",
            "select * from pg_temp_12.t",
            "create temporary table t ()",
            "set session authorization bob",
            "SET SESSION_AUTHORIZATION bob",
            "prepare transaction 'x'",
            "prepare p as select 1",
            "explain execute p",
            "END",
            "commit",
            "load 'x'",
            "listen c; unlisten *",
            "notify c",
            "discard all",
            "deallocate p",
            "reset all",
            "start transaction",
            "select weekend, pending, settings, offset_ from calendar",
            "select t\u{e9}mp from t",
            "with x as (select 1) select * from x",
        ];
        for text in texts {
            let sql = text.as_bytes();
            assert_eq!(effects(sql), scan_effects(sql), "{text}");
        }
        // The quick test lets ordinary reads and writes through unlexed.
        for text in [
            texts[0],
            texts[1],
            texts[33],
            texts[35],
            "insert into t (a, b) values (1, 'x') returning id",
            "delete from t where id = $1",
        ] {
            assert!(!mentions_effects(text.as_bytes()), "{text}");
            assert_eq!(effects(text.as_bytes()), scan_effects(text.as_bytes()));
        }
        assert!(mentions_effects(b"select $$x$$temp"));
        assert!(mentions_effects(b"select 1 /* Set_Config */"));
    }

    #[test]
    fn the_quick_keyword_test_passes_every_keyword() {
        for spelling in SPELLINGS {
            let upper = spelling.to_ascii_uppercase();
            for word in [spelling, &upper[..]] {
                assert!(may_be_keyword(word), "{}", String::from_utf8_lossy(word));
                assert_ne!(keyword(word), Kw::Other);
            }
        }
        for word in ["pg_temp_1", "PG_TEMP_12345678901234567890"] {
            assert!(may_be_keyword(word.as_bytes()), "{word}");
            assert_eq!(keyword(word.as_bytes()), Kw::PgTemp, "{word}");
        }
        // What it is for: the words of ordinary statements are not looked up.
        for word in [
            "select", "SELECT", "abalance", "FROM", "where", "71234", "", "x",
        ] {
            assert!(!may_be_keyword(word.as_bytes()), "{word}");
        }
        // A word it lets through may still be none.
        assert!(may_be_keyword(b"aid"));
        assert_eq!(keyword(b"aid"), Kw::Other);
        assert!(mentions_effects(b"select pg_temp_3.f()"));
        assert!(mentions_effects(b"select x.SET_CONFIG_ish"));
        assert!(!mentions_effects(
            b"select aid, settings_configured from pgbench_accounts"
        ));
    }

    fn toks(sql: &str) -> Vec<Tok<'_>> {
        Lexer::new(sql.as_bytes()).collect()
    }

    #[test]
    fn lexes_like_postgres() {
        use Tok::*;
        assert_eq!(
            toks("select a$$b, $1, $x$ ; $x$ from \"t\"\"x\"; -- c\n"),
            [
                Word(b"select"),
                Word(b"a$$b"),
                Punct(b','),
                Literal(b"$1"),
                Punct(b','),
                Literal(b"$x$ ; $x$"),
                Word(b"from"),
                Quoted(b"t\"\"x"),
                Semi,
            ]
        );
        assert_eq!(
            toks("/* a /* b */ ; */ E'\\'' N'x' U&\"a\" 1.5e3 \"\" \"open"),
            [
                Literal(b"\\'"),
                Literal(b"x"),
                BadQuoted,
                Literal(b"1.5e3"),
                BadQuoted,
                BadQuoted
            ]
        );
        assert_eq!(toks("$a$ unterminated ;"), [Literal(b"$a$ unterminated ;")]);
        assert_eq!(toks("x $ y"), [Word(b"x"), Punct(b'$'), Word(b"y")]);
        assert_eq!(toks("t\u{e9}mp"), [Word("t\u{e9}mp".as_bytes())]);
        // set_config is still noticed in strings, quoted names, dollar bodies and comments.
        assert!(effects(b"DO $$ BEGIN PERFORM set_config('a.b', 'c', false); END $$").session);
        assert!(effects(b"select \"set_config\"('a.b', 'c', false)").session);
        assert!(effects(b"select pg_catalog.SET_CONFIG('a.b', 'c', false)").session);
        assert!(effects(b"select 1 /* set_config */").session);
        assert!(!effects(b"select config, set_conf from t").session);
    }

    fn pin(sql: &str) -> Option<PinReason> {
        effects(sql.as_bytes()).pin
    }

    #[test]
    fn pins_temp_tables() {
        for sql in [
            "CREATE TEMP TABLE t (a int)",
            "create temporary view v as select 1",
            "CREATE GLOBAL TEMP TABLE t (a int)",
            "create local temporary table t (a int) on commit drop",
            "SELECT * INTO TEMP t FROM x",
            "select 1; CREATE TABLE pg_temp.t (a int)",
            "ALTER TABLE pg_temp.t ADD b int",
            "create table \"pg_temp\".t ()",
            "insert into PG_TEMP_3.t values (1)",
            "CREATE TEMP SEQUENCE s",
        ] {
            assert_eq!(pin(sql), Some(PinReason::TempTable), "{sql}");
            assert!(effects(sql.as_bytes()).unpin_check, "{sql}");
        }
        for sql in [
            "DISCARD TEMP",
            "discard temporary",
            "select 'temp'",
            "select \"temp\" from t",
            "select temperature from t",
            "select 1 -- temp",
            "select $$ create temp table t() $$",
            "select pg_temporary, pg_temp_x from t",
            "create table t (a int)",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
        // DISCARD only spares its own statement.
        assert_eq!(
            pin("discard temp; create temp table t()"),
            Some(PinReason::TempTable)
        );
    }

    #[test]
    fn pins_cursors_with_hold() {
        for sql in [
            "DECLARE c CURSOR WITH HOLD FOR select 1",
            "declare c no scroll cursor with hold for select 1",
            "begin; declare c binary insensitive cursor With /* x */ Hold for select 1; commit",
        ] {
            assert_eq!(pin(sql), Some(PinReason::CursorWithHold), "{sql}");
        }
        for sql in [
            "DECLARE c CURSOR WITHOUT HOLD FOR select 1",
            "declare c cursor for select 1",
            "declare c cursor with \"hold\" for select 1",
            "select 'with hold'",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
    }

    #[test]
    fn pins_advisory_locks() {
        for sql in [
            "select pg_advisory_lock(1)",
            "SELECT PG_ADVISORY_LOCK_SHARED(1, 2)",
            "select pg_try_advisory_lock(1)",
            "select pg_catalog.pg_try_advisory_lock_shared(1)",
            "select pg_catalog.pg_advisory_lock(1)",
            "select \"pg_advisory_lock\"(1)",
        ] {
            assert_eq!(pin(sql), Some(PinReason::AdvisoryLock), "{sql}");
        }
        for sql in [
            "select pg_advisory_xact_lock(1)",
            "select pg_try_advisory_xact_lock_shared(1)",
            "select pg_advisory_xact_lock_shared(1)",
            "select pg_try_advisory_xact_lock(1)",
            "select 'pg_advisory_lock(1)'",
            "select \"PG_ADVISORY_LOCK\"(1)",
            "select my_pg_advisory_lock(1)",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
    }

    #[test]
    fn pins_load_and_session_authorization() {
        assert_eq!(pin("LOAD 'auto_explain'"), Some(PinReason::Load));
        assert_eq!(pin("select 1; load 'x'"), Some(PinReason::Load));
        assert_eq!(pin("select load from t"), None);
        for sql in [
            "SET SESSION AUTHORIZATION bob",
            "set session authorization default",
            "SET SESSION SESSION AUTHORIZATION 'bob'",
            "set local session authorization bob",
            "set session_authorization = bob",
        ] {
            assert_eq!(pin(sql), Some(PinReason::SessionAuthorization), "{sql}");
        }
        for sql in [
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SET search_path TO x",
            "reset session authorization",
            "select session, authorization from t",
            "update t set session = 1, authorization = 2",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
    }

    #[test]
    fn pins_multi_statement_prepare() {
        // A PREPARE that is the whole text is followed by pgward: no pin.
        for sql in [
            "PREPARE p AS select 1",
            "prepare p (int) as select $1;",
            "  prepare \"P\" as select 1 ; -- done\n ; /* x */",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
            assert!(!effects(sql.as_bytes()).unpin_check, "{sql}");
        }
        // PREPAREs among other statements are followed by name too.
        for sql in [
            "PREPARE p AS select 1; EXECUTE p",
            "select 1; prepare p as select 2",
            "prepare a as select 1; prepare b as select 2",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
        }
        for sql in [
            // Names pgward cannot follow.
            "prepare U&\"p\" as select 1",
            "prepare;",
        ] {
            assert_eq!(pin(sql), Some(PinReason::Prepare), "{sql}");
            assert!(effects(sql.as_bytes()).unpin_check, "{sql}");
        }
        let p = sql_prepared(b"PREPARE p AS select 1; EXECUTE p").unwrap();
        assert_eq!(p.prepares, [("p".to_owned(), 0..21)]);
        // The first reason in the text wins.
        assert_eq!(
            pin("prepare U&\"p\" as select 1; create temp table t ()"),
            Some(PinReason::Prepare)
        );
        assert_eq!(
            pin("create temp table t (); prepare p as select 1"),
            Some(PinReason::TempTable)
        );
        // Two-phase commit is neither a pin nor a prepare.
        for sql in [
            "PREPARE TRANSACTION 'x'",
            "begin; insert into t values (1); prepare transaction 'x'",
        ] {
            assert_eq!(pin(sql), None, "{sql}");
            assert_eq!(sql_prepared(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn unpin_checks_and_notify() {
        for sql in [
            "DROP TABLE t",
            "discard all",
            "close c",
            "deallocate p",
            "reset all",
            "commit",
            "END",
            "rollback",
            "abort",
            "set session authorization default",
            "select pg_advisory_unlock(1)",
            "select pg_catalog.pg_advisory_unlock_shared(1)",
            "select pg_advisory_unlock_all()",
            "select 1; close all",
        ] {
            assert!(effects(sql.as_bytes()).unpin_check, "{sql}");
        }
        for sql in ["select 1", "insert into t select * from u", "select 'drop'"] {
            assert!(!effects(sql.as_bytes()).unpin_check, "{sql}");
        }
        assert!(effects(b"NOTIFY chan, 'x'").notify);
        assert!(effects(b"select pg_notify('chan', 'x')").notify);
        assert!(effects(b"select 1; notify c").notify);
        assert!(!effects(b"select 'notify'").notify);
        assert!(!effects(b"select notify from t").notify);
        // Neither is part of any().
        assert!(!effects(b"notify c").any());
        assert!(!effects(b"select pg_advisory_lock(1)").any());
        assert!(effects(b"LISTEN c").any());
    }

    fn ops(sql: &str) -> Vec<ListenOp> {
        match listen_text(sql.as_bytes()) {
            ListenText::Found(found) => found.into_iter().map(|f| f.op).collect(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn listen_texts() {
        use ListenOp::*;
        assert_eq!(listen_text(b"select 1"), ListenText::None);
        assert_eq!(listen_text(b"select 'listen x'"), ListenText::None);
        assert_eq!(listen_text(b""), ListenText::None);
        assert_eq!(ops("LISTEN Chan"), [Listen("chan".into())]);
        assert_eq!(
            ops(" ; listen a; ; UNLISTEN \"B\"\"x\"; unlisten *;; listen \"Q\" -- x\n"),
            [
                Listen("a".into()),
                Unlisten("B\"x".into()),
                UnlistenAll,
                Listen("Q".into()),
            ]
        );
        assert_eq!(ops("listen Caf\u{e9}"), [Listen("caf\u{e9}".into())]);
        let long = format!("listen {}", "A".repeat(70));
        assert_eq!(ops(&long), [Listen("a".repeat(63))]);
        // Among other statements: where each one is, and which statement it is.
        let sql = "begin; /* c */ LISTEN a ; select 1;; unlisten *";
        let ListenText::Found(found) = listen_text(sql.as_bytes()) else {
            panic!("not found");
        };
        let spans: Vec<(&str, usize)> = found
            .iter()
            .map(|f| (&sql[f.span.clone()], f.ordinal))
            .collect();
        assert_eq!(spans, [("LISTEN a", 1), ("unlisten *", 3)]);
        for sql in [
            "LISTEN;",
            "LISTEN 'x'",
            "listen *",
            "unlisten",
            "listen a b",
            "listen a.b",
            "listen \"\"",
            "listen U&\"x\"",
            "select 1; listen 'x'",
        ] {
            assert_eq!(listen_text(sql.as_bytes()), ListenText::Unreadable, "{sql}");
        }
        assert!(effects(b"select 1; listen a").listen);
        assert!(effects(b"select 1; unlisten *").listen);
    }

    fn prepared(sql: &str) -> SqlPrepared {
        sql_prepared(sql.as_bytes()).unwrap_or_else(|| panic!("nothing in {sql}"))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sql_prepared_statements() {
        for sql in [
            "select 1",
            "create table t (a int)",
            "explain select 1",
            "explain analyze select 'execute p'",
            "CREATE TRIGGER t AFTER INSERT ON x FOR EACH ROW EXECUTE FUNCTION f()",
            "create trigger t before update on x execute procedure f()",
            "create schema s grant execute on function f() to bob",
            "create function f() returns int as $$ execute p $$ language sql",
            "select execute from t",
            "PREPARE TRANSACTION 'x'",
            "",
        ] {
            assert_eq!(sql_prepared(sql.as_bytes()), None, "{sql}");
        }
        let p = prepared("PREPARE Q1 (int, text) AS select $1, $2;  -- trailing\n");
        assert_eq!(p.prepares, [("q1".to_owned(), 0..39)]);
        assert!(p.uses.is_empty() && p.deallocates.is_empty());
        let p = prepared("prepare \"My\"\"Stmt\" as select 1");
        assert_eq!(p.prepares[0].0, "My\"Stmt");
        let sql = "prepare a as select 1; prepare b as select 2";
        let p = prepared(sql);
        let texts: Vec<(&str, &str)> = p
            .prepares
            .iter()
            .map(|(name, span)| (name.as_str(), &sql[span.clone()]))
            .collect();
        assert_eq!(
            texts,
            [
                ("a", "prepare a as select 1"),
                ("b", "prepare b as select 2")
            ]
        );
        assert_eq!(
            prepared("prepare \"transaction\" as select 1").prepares[0].0,
            "transaction"
        );
        assert_eq!(
            prepared(
                "EXECUTE p(1, 'a'); explain execute Q; EXPLAIN ANALYZE VERBOSE execute r; \
                 explain (analyze, format json) execute \"S\"(2); \
                 create temp table t as execute u; \
                 CREATE TABLE t2 (a, b) AS EXECUTE v (1) WITH NO DATA"
            )
            .uses,
            names(&["p", "q", "r", "S", "u", "v"])
        );
        let p = prepared(
            "deallocate p; DEALLOCATE PREPARE \"Q\"; deallocate all; deallocate prepare ALL; \
             deallocate prepare; deallocate \"all\"",
        );
        assert_eq!(
            p.deallocates,
            [
                Deallocate::Name("p".into()),
                Deallocate::Name("Q".into()),
                Deallocate::All,
                Deallocate::All,
                Deallocate::Name("prepare".into()),
                Deallocate::Name("all".into()),
            ]
        );
        let p = prepared("prepare p as select 1; execute p; deallocate p");
        assert_eq!(p.prepares[0].0, "p");
        assert_eq!(p.uses, ["p"]);
        assert_eq!(p.deallocates, [Deallocate::Name("p".into())]);
        // A name pgward cannot read is left out (and pins).
        assert_eq!(sql_prepared(b"prepare U&\"p\" as select 1"), None);
        assert_eq!(sql_prepared(b"prepare \xff as select 1"), None);
        assert_eq!(pin("prepare \u{e9}\u{e9} as select 1"), None);
        assert_eq!(
            prepared("prepare \u{c9} as select 1").prepares[0].0,
            "\u{c9}"
        );
        let long = format!("prepare {} as select 1", "\u{e9}".repeat(40));
        assert_eq!(sql_prepared(long.as_bytes()), None);
        assert_eq!(pin(&long), Some(PinReason::Prepare));
    }
}
