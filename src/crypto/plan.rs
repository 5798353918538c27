//! What column encryption does to one SQL text: which literals and parameters become
//! ciphertext, which result columns are decrypted and how each user sees them, or why the
//! text is refused.
//!
//! The plan is made from the shared statement analysis and the catalog, never from a parse of
//! its own. The rules fail closed: a designated column used anywhere the server would compute
//! on its value (which is ciphertext) is refused with 0A000 naming the column, and so is any
//! statement on a table with designated columns that the analysis does not fully understand.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalog::Snapshot;
use crate::policy::requests::{columns_of, resolve, Lookup};
use crate::sql::{
    Analysis, AssignTarget, Assigned, ColumnRef, CompareOp, Context, CopyFormat, Kind, Output,
    StatementInfo, ValueSource, ValueUse,
};

use super::{ColumnId, Crypto, Mode};

/// Type OIDs a designated column may have: ciphertext is text.
const TEXT_OID: u32 = 25;
const VARCHAR_OID: u32 = 1043;

/// How a user sees a designated column it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reveal {
    Plaintext,
    /// The user lacks the `decrypt` action (`encryption.without_decrypt = "null"`).
    Null,
    /// The user lacks the `decrypt` action (`encryption.without_decrypt = "ciphertext"`).
    Ciphertext,
}

/// Why a value is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Stored: encrypted under the active key.
    Write,
    /// Compared with stored values: the deterministic envelope(s) of the value.
    Search { op: CompareOp, value_first: bool },
}

/// A literal of the text to replace with ciphertext, by its position (1-based line and
/// column, as the analysis reports it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralEdit {
    pub line: u64,
    pub column: u64,
    pub id: ColumnId,
    pub purpose: Purpose,
}

/// A parameter (0-based) whose bound value is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamEdit {
    pub index: usize,
    pub id: ColumnId,
    pub purpose: Purpose,
}

/// A COPY into or out of a table with designated columns (text or CSV).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    /// The designated column of each data column, by position.
    pub columns: Vec<Option<ColumnId>>,
    pub csv: bool,
    pub delimiter: u8,
    pub null: Vec<u8>,
    pub header: bool,
    pub quote: u8,
    pub escape: u8,
    /// PostgreSQL's binary format: the text options above do not apply.
    pub binary: bool,
    /// COPY FROM STDIN: the client sends the data.
    pub incoming: bool,
}

/// What encryption does to one statement of the text.
#[derive(Debug, Clone, Default)]
pub struct StatementPlan {
    /// The designated column of each result column, by position, as far as the analysis
    /// knows; RowDescription's table OID and column number decide where they are given.
    pub outputs: Vec<Option<ColumnId>>,
    pub copy: Option<CopyPlan>,
}

/// What encryption does to one SQL text.
#[derive(Debug)]
pub struct Plan {
    pub crypto: Arc<Crypto>,
    pub snapshot: Arc<Snapshot>,
    pub literals: Vec<LiteralEdit>,
    pub params: Vec<ParamEdit>,
    pub statements: Vec<StatementPlan>,
    /// How this user sees each designated column, by id.
    pub reveal: Vec<Reveal>,
    /// Every designated column of the tables the text touches: a result value that is a
    /// ciphertext where the analysis expected none (a scalar subquery, a UNION of two
    /// columns) is decrypted with the one whose key authenticates it.
    pub candidates: Vec<ColumnId>,
}

impl Plan {
    /// The designated column at `table_oid` / `attnum` of a RowDescription field, else the
    /// analysis's guess for result column `index` of statement `statement`.
    pub fn result_column(
        &self,
        statement: usize,
        index: usize,
        table_oid: u32,
        attnum: i16,
    ) -> Option<ColumnId> {
        if table_oid != 0 {
            let (schema, table, column) = self.snapshot.attribute(table_oid, attnum)?;
            return self.crypto.id_of(schema, table, column);
        }
        *self.statements.get(statement)?.outputs.get(index)?
    }
}

/// A statement column encryption refuses; the message names the column and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

/// The plan for `analysis` of `sql`, None when it touches no designated column.
pub fn plan(
    crypto: &Arc<Crypto>,
    analysis: &Analysis,
    sql: &[u8],
    lookup: &Lookup,
    snapshot: &Arc<Snapshot>,
    reveal: impl Fn(&str, &str, &str) -> Reveal,
) -> Result<Option<Plan>, Refusal> {
    if analysis.statements.is_empty() {
        // Maintenance reads and writes no values (sqlparser does not parse all its forms).
        if is_maintenance(sql) {
            return Ok(None);
        }
        // Nothing was analysed: refuse when the text may name a designated table.
        return match crypto.tables().find(|t| mentions(sql, t.1)) {
            Some((schema, table)) => Err(Refusal(format!(
                "pgward: statement could not be analysed and may touch {schema}.{table}, which has encrypted columns"
            ))),
            None => Ok(None),
        };
    }
    let mut planner = Planner {
        crypto,
        lookup,
        literals: Vec::new(),
        params: Vec::new(),
        touched: false,
        candidates: Vec::new(),
    };
    let mut statements = Vec::with_capacity(analysis.statements.len());
    for info in &analysis.statements {
        statements.push(planner.statement(info, sql)?);
    }
    if !planner.touched {
        return Ok(None);
    }
    planner.check_params(analysis, sql)?;
    let reveal = crypto
        .columns()
        .map(|c| reveal(c.schema(), c.table(), c.column()))
        .collect();
    Ok(Some(Plan {
        crypto: crypto.clone(),
        snapshot: snapshot.clone(),
        literals: planner.literals,
        params: planner.params,
        statements,
        reveal,
        candidates: planner.candidates,
    }))
}

/// A single VACUUM, ANALYZE, REINDEX or CLUSTER statement: no values go in or out.
fn is_maintenance(sql: &[u8]) -> bool {
    let text = String::from_utf8_lossy(sql);
    let trimmed = text.trim().trim_end_matches(';');
    if trimmed.contains(';') || trimmed.contains("--") || trimmed.contains("/*") {
        return false;
    }
    let first = trimmed
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "vacuum" | "analyze" | "analyse" | "reindex" | "cluster"
    )
}

/// Whether `sql` contains `name` as a word (ASCII case-insensitive).
fn mentions(sql: &[u8], name: &str) -> bool {
    let name = name.as_bytes();
    if name.is_empty() || sql.len() < name.len() {
        return false;
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    (0..=sql.len() - name.len()).any(|i| {
        sql[i..i + name.len()].eq_ignore_ascii_case(name)
            && (i == 0 || !word(sql[i - 1]))
            && sql.get(i + name.len()).is_none_or(|&b| !word(b))
    })
}

struct Planner<'a> {
    crypto: &'a Arc<Crypto>,
    lookup: &'a Lookup<'a>,
    literals: Vec<LiteralEdit>,
    params: Vec<ParamEdit>,
    /// Some statement touches a table with designated columns.
    touched: bool,
    candidates: Vec<ColumnId>,
}

/// The relations a statement's table indexes stand for (`schema.table` candidates).
type Tables = Vec<Vec<String>>;

impl Planner<'_> {
    fn statement(&mut self, info: &StatementInfo, sql: &[u8]) -> Result<StatementPlan, Refusal> {
        let tables: Tables = info
            .tables
            .iter()
            .map(|name| resolve(name, self.lookup).0)
            .collect();
        let designated_table = tables
            .iter()
            .flatten()
            .find(|t| split(t).is_some_and(|(s, n)| self.crypto.table_has_columns(s, n)));
        let Some(designated_table) = designated_table else {
            if !info.understood {
                // Names the walker did not model may still reach a designated table.
                if let Some((schema, table)) = self.crypto.tables().find(|t| mentions(sql, t.1)) {
                    return Err(Refusal(format!(
                        "pgward: statement not fully understood and may touch {schema}.{table}, which has encrypted columns"
                    )));
                }
            }
            return Ok(StatementPlan::default());
        };
        self.touched = true;
        for (schema, table) in tables.iter().flatten().filter_map(|t| split(t)) {
            for column in self.crypto.columns() {
                if column.schema() == schema && column.table() == table {
                    // Ciphertext is stored as text: another type would reject it, or (varchar(n))
                    // cut it short.
                    let stored_type =
                        self.lookup
                            .snapshot
                            .column_type(schema, table, column.column());
                    if stored_type.is_some_and(|oid| oid != TEXT_OID && oid != VARCHAR_OID) {
                        return Err(Refusal(format!(
                            "pgward: encrypted column {} must be of type text in PostgreSQL (it holds ciphertext as text)",
                            column.name()
                        )));
                    }
                    let id = self
                        .crypto
                        .id_of(schema, table, column.column())
                        .expect("listed");
                    if !self.candidates.contains(&id) {
                        self.candidates.push(id);
                    }
                }
            }
        }
        if !info.understood {
            return Err(Refusal(format!(
                "pgward: statement on {designated_table}, which has encrypted columns, is not fully understood; refusing it rather than risk storing or comparing plaintext"
            )));
        }
        for used in &info.contexts {
            self.check_context(&used.column, &used.context, &tables)?;
        }
        for assignment in &info.assignments {
            self.assignment(assignment, &tables)?;
        }
        for value in &info.values {
            self.value(value, &tables)?;
        }
        let mut plan = StatementPlan {
            outputs: self.outputs(&info.outputs, &tables),
            copy: None,
        };
        if let Some(copy) = &info.copy {
            plan.copy = self.copy(info, copy, &tables, &plan.outputs)?;
        }
        Ok(plan)
    }

    /// The designated columns a column reference may stand for, and whether it may also
    /// stand for a column that is not designated.
    fn designated(&self, column: &ColumnRef, tables: &Tables) -> (Vec<ColumnId>, bool) {
        let mut ids = Vec::new();
        let mut plain = false;
        for (tbl, col) in columns_of(column, tables, self.lookup.snapshot) {
            match split(&tbl).and_then(|(s, t)| self.crypto.id_of(s, t, &col)) {
                Some(id) => {
                    if !ids.contains(&id) {
                        ids.push(id)
                    }
                }
                None => plain = true,
            }
        }
        (ids, plain)
    }

    fn name(&self, id: ColumnId) -> &str {
        self.crypto.by_id(id).name()
    }

    fn refuse(&self, id: ColumnId, why: impl std::fmt::Display) -> Refusal {
        Refusal(format!(
            "pgward: encrypted column {} does not support {why}",
            self.name(id)
        ))
    }

    fn check_context(
        &self,
        column: &ColumnRef,
        context: &Context,
        tables: &Tables,
    ) -> Result<(), Refusal> {
        let (ids, plain) = self.designated(column, tables);
        if let Context::EqualsColumn(other) = context {
            let (others, other_plain) = self.designated(other, tables);
            if ids.is_empty() && others.is_empty() {
                return Ok(());
            }
            // Ciphertexts compare equal only within one deterministic column.
            let same = ids.len() == 1
                && others == ids
                && !plain
                && !other_plain
                && self.crypto.by_id(ids[0]).mode() == Mode::Deterministic;
            if same {
                return Ok(());
            }
            let id = ids.first().or(others.first()).copied().expect("one side");
            return Err(self.refuse(
                id,
                "comparison with another column (only a deterministic column with itself)",
            ));
        }
        for id in ids {
            let deterministic = self.crypto.by_id(id).mode() == Mode::Deterministic;
            match context {
                Context::Output | Context::NullTest => {}
                Context::Equality | Context::Grouped if deterministic => {}
                Context::Equality => {
                    return Err(self.refuse(
                        id,
                        "equality (its mode is randomized; use mode = \"deterministic\")",
                    ))
                }
                Context::Grouped => {
                    return Err(self.refuse(
                        id,
                        "grouping, DISTINCT or set operations (its mode is randomized)",
                    ))
                }
                Context::Computed(what) => return Err(self.refuse(id, what)),
                Context::EqualsColumn(_) => unreachable!("handled above"),
            }
        }
        Ok(())
    }

    /// The designated column an assignment writes, if any.
    fn target(
        &self,
        table: usize,
        target: &AssignTarget,
        tables: &Tables,
    ) -> Result<Option<ColumnId>, Refusal> {
        let mut found = None;
        let mut plain = false;
        for tbl in &tables[table] {
            let Some((schema, name)) = split(tbl) else {
                continue;
            };
            let column = match target {
                AssignTarget::Named(column) => Some(column.as_str()),
                AssignTarget::Position(k) => self
                    .lookup
                    .snapshot
                    .columns(schema, name)
                    .and_then(|cols| cols.get(*k))
                    .map(String::as_str),
            };
            let Some(column) = column else {
                if self.crypto.table_has_columns(schema, name) {
                    return Err(Refusal(format!(
                        "pgward: cannot tell which column of {tbl} a value is written to, and {tbl} has encrypted columns"
                    )));
                }
                continue;
            };
            match self.crypto.id_of(schema, name, column) {
                Some(id) => found = Some(id),
                None => plain = true,
            }
        }
        if let (Some(id), true) = (found, plain) {
            return Err(self.refuse(
                id,
                "a statement whose target table is ambiguous (set search_path or qualify it)",
            ));
        }
        Ok(found)
    }

    fn assignment(
        &mut self,
        assignment: &crate::sql::Assignment,
        tables: &Tables,
    ) -> Result<(), Refusal> {
        let target = self.target(assignment.table, &assignment.target, tables)?;
        match (&assignment.value, target) {
            (Assigned::Value(value), Some(id)) => self.edit(*value, id, Purpose::Write),
            (Assigned::Value(_) | Assigned::Null | Assigned::Default, _) => {}
            (Assigned::Column(source), _) => {
                let (sources, plain) = self.designated(source, tables);
                let moves_within = matches!(target, Some(id) if sources == [id] && !plain);
                if !moves_within {
                    if let Some(id) = target.or(sources.first().copied()) {
                        return Err(self.refuse(
                            id,
                            "copying values between columns on the server (ciphertext is bound to its column)",
                        ));
                    }
                }
            }
            (Assigned::Excluded(column), _) => {
                let table = assignment.table;
                let source = self.target(table, &AssignTarget::Named(column.clone()), tables)?;
                if source != target {
                    let id = target.or(source).expect("one is designated");
                    return Err(self.refuse(
                        id,
                        "copying values between columns on the server (ciphertext is bound to its column)",
                    ));
                }
            }
            (Assigned::Expr, Some(id)) => return Err(self.refuse(
                id,
                "a computed value (only literals, parameters, NULL and DEFAULT can be encrypted)",
            )),
            (Assigned::Expr, None) => {}
        }
        Ok(())
    }

    fn value(&mut self, value: &crate::sql::ValueTarget, tables: &Tables) -> Result<(), Refusal> {
        let (ids, plain) = self.designated(&value.column, tables);
        let Some(&id) = ids.first() else {
            return Ok(());
        };
        if ids.len() > 1 || plain {
            return Err(self.refuse(
                id,
                "a value compared with a column whose table is ambiguous (qualify the column)",
            ));
        }
        match value.usage {
            // The assignment it belongs to encrypts it (or refuses it).
            ValueUse::Assigned => {
                if !self.has_edit(value.value) {
                    return Err(
                        self.refuse(id, "a value written where pgward cannot tell the column")
                    );
                }
                Ok(())
            }
            ValueUse::Compared { op, value_first } => {
                if self.crypto.by_id(id).mode() != Mode::Deterministic {
                    return Err(self.refuse(
                        id,
                        "equality (its mode is randomized; use mode = \"deterministic\")",
                    ));
                }
                if op == CompareOp::Other {
                    return Err(self.refuse(id, "comparisons other than equality"));
                }
                self.edit(value.value, id, Purpose::Search { op, value_first });
                Ok(())
            }
        }
    }

    fn has_edit(&self, value: ValueSource) -> bool {
        match value {
            ValueSource::Param(n) => self.params.iter().any(|p| p.index + 1 == n as usize),
            ValueSource::Literal { line, column } => self
                .literals
                .iter()
                .any(|l| l.line == line && l.column == column),
        }
    }

    fn edit(&mut self, value: ValueSource, id: ColumnId, purpose: Purpose) {
        match value {
            ValueSource::Param(n) => {
                let edit = ParamEdit {
                    index: n as usize - 1,
                    id,
                    purpose,
                };
                if !self.params.contains(&edit) {
                    self.params.push(edit);
                }
            }
            ValueSource::Literal { line, column } => {
                let edit = LiteralEdit {
                    line,
                    column,
                    id,
                    purpose,
                };
                if !self.literals.contains(&edit) {
                    self.literals.push(edit);
                }
            }
        }
    }

    /// A parameter is encrypted for one column and one purpose, and used nowhere else:
    /// elsewhere it would be ciphertext where the statement means plaintext.
    fn check_params(&self, analysis: &Analysis, sql: &[u8]) -> Result<(), Refusal> {
        let uses = param_uses(sql);
        for edit in &self.params {
            let n = edit.index as u32 + 1;
            let conflicting = self.params.iter().any(|other| {
                other.index == edit.index
                    && (other.id != edit.id
                        || matches!(other.purpose, Purpose::Write)
                            != matches!(edit.purpose, Purpose::Write))
            });
            let param = ValueSource::Param(n);
            let targets = analysis
                .statements
                .iter()
                .map(|s| {
                    let values = s.values.iter().filter(|v| v.value == param).count();
                    // A positional INSERT value has no value target (its column needs the
                    // catalog): its assignment is its use.
                    let positional = s
                        .assignments
                        .iter()
                        .filter(|a| {
                            matches!(a.target, AssignTarget::Position(_))
                                && a.value == Assigned::Value(param)
                        })
                        .count();
                    values + positional
                })
                .sum::<usize>();
            if conflicting || uses.get(&n).copied().unwrap_or(0) > targets {
                return Err(self.refuse(
                    edit.id,
                    format_args!(
                        "parameter ${n} used both for it and elsewhere (bind the value twice)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The designated column of each result column, by position.
    fn outputs(&self, outputs: &[Output], tables: &Tables) -> Vec<Option<ColumnId>> {
        let mut ids = Vec::new();
        for output in outputs {
            match output {
                Output::Column(ColumnRef::All { table }) => {
                    let Some((schema, name)) = tables[*table].first().and_then(|t| split(t)) else {
                        return ids; // positions after an unknown `*` are unknown
                    };
                    let Some(columns) = self.lookup.snapshot.columns(schema, name) else {
                        return ids;
                    };
                    ids.extend(columns.iter().map(|c| self.crypto.id_of(schema, name, c)));
                }
                Output::Column(column) => {
                    let (found, plain) = self.designated(column, tables);
                    ids.push(match found.as_slice() {
                        [id] if !plain => Some(*id),
                        _ => None,
                    });
                }
                Output::Expr => ids.push(None),
            }
        }
        ids
    }

    fn copy(
        &self,
        info: &StatementInfo,
        copy: &crate::sql::CopyInfo,
        tables: &Tables,
        outputs: &[Option<ColumnId>],
    ) -> Result<Option<CopyPlan>, Refusal> {
        let columns: Vec<Option<ColumnId>> = match copy.table {
            None => outputs.to_vec(),
            Some(table) => {
                let Some((schema, name)) = tables[table].first().and_then(|t| split(t)) else {
                    return Ok(None);
                };
                let names: Vec<String> = match &copy.columns {
                    Some(names) => names.clone(),
                    None => match self.lookup.snapshot.columns(schema, name) {
                        Some(columns) => columns.to_vec(),
                        None if self.crypto.table_has_columns(schema, name) => {
                            return Err(Refusal(format!(
                                "pgward: cannot tell the columns of {schema}.{name}, which has encrypted columns"
                            )))
                        }
                        None => return Ok(None),
                    },
                };
                names
                    .iter()
                    .map(|c| self.crypto.id_of(schema, name, c))
                    .collect()
            }
        };
        let Some(id) = columns.iter().flatten().next().copied() else {
            return Ok(None);
        };
        if copy.other_options {
            return Err(self.refuse(
                id,
                "this COPY option (FORMAT, DELIMITER, NULL, HEADER, QUOTE and ESCAPE are supported)",
            ));
        }
        let csv = copy.format == CopyFormat::Csv;
        let ascii = |c: Option<char>, default: u8| -> Result<u8, Refusal> {
            match c {
                None => Ok(default),
                Some(c) if c.is_ascii() => Ok(c as u8),
                Some(_) => Err(self.refuse(id, "a non-ASCII COPY delimiter, quote or escape")),
            }
        };
        let quote = ascii(copy.quote, b'"')?;
        let plan = CopyPlan {
            columns,
            csv,
            delimiter: ascii(copy.delimiter, if csv { b',' } else { b'\t' })?,
            null: copy
                .null
                .clone()
                .unwrap_or_else(|| if csv { String::new() } else { "\\N".into() })
                .into_bytes(),
            header: copy.header,
            quote,
            escape: ascii(copy.escape, quote)?,
            binary: copy.format == CopyFormat::Binary,
            incoming: info.kind == Kind::CopyIn,
        };
        debug_assert!(matches!(info.kind, Kind::CopyIn | Kind::CopyOut));
        Ok(Some(plan))
    }
}

/// `schema.table` split in two.
fn split(tbl: &str) -> Option<(&str, &str)> {
    tbl.split_once('.')
}

/// How often each `$n` occurs in the text, outside literals, quoted names and comments.
fn param_uses(sql: &[u8]) -> HashMap<u32, usize> {
    let mut uses = HashMap::new();
    for (n, _, _) in param_positions(sql) {
        *uses.entry(n).or_insert(0) += 1;
    }
    uses
}

/// Each `$n` of the text with its byte range, outside literals, quoted names and comments.
pub(crate) fn param_positions(sql: &[u8]) -> Vec<(u32, usize, usize)> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b'\'' | b'"' => {
                let quote = sql[i];
                i += 1;
                while i < sql.len() {
                    if sql[i] == quote {
                        if sql.get(i + 1) == Some(&quote) {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    // E'...' strings escape quotes with a backslash; skipping the next byte
                    // can only over-count, which refuses rather than leaks.
                    if sql[i] == b'\\' && quote == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if sql.get(i + 1) == Some(&b'-') => {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < sql.len() && !(sql[i] == b'*' && sql[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'$' => {
                let digits = sql[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits > 0 {
                    if let Ok(n) = std::str::from_utf8(&sql[i + 1..i + 1 + digits])
                        .unwrap_or("")
                        .parse::<u32>()
                    {
                        found.push((n, i, i + 1 + digits));
                    }
                    i += 1 + digits;
                } else if let Some(end) = dollar_quote_end(sql, i) {
                    i = end;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    found
}

/// The end of a dollar-quoted string starting at `start` (`$tag$...$tag$`), if it is one.
pub(super) fn dollar_quote_end(sql: &[u8], start: usize) -> Option<usize> {
    let tag_len = sql[start + 1..]
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b >= 0x80)
        .count();
    if sql.get(start + 1 + tag_len) != Some(&b'$') {
        return None;
    }
    let tag = &sql[start..start + tag_len + 2];
    let body = start + tag.len();
    let end = sql[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + end + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_counted_outside_literals_and_comments() {
        let uses = param_uses(b"SELECT $1, '$2', \"$3\", $$ $4 $$ -- $5\n /* $6 */ $1 $10");
        assert_eq!(uses.get(&1), Some(&2));
        assert_eq!(uses.get(&10), Some(&1));
        for n in 2..=6 {
            assert_eq!(uses.get(&n), None, "${n}");
        }
    }

    #[test]
    fn maintenance_is_recognised_alone() {
        assert!(is_maintenance(b"VACUUM ANALYZE enc_bench"));
        assert!(is_maintenance(b"analyze customers;"));
        assert!(!is_maintenance(b"VACUUM t; UPDATE customers SET ssn = 'x'"));
        assert!(!is_maintenance(b"SELECT 1"));
    }

    #[test]
    fn table_names_are_found_as_words() {
        assert!(mentions(
            b"DO $$ insert into Customers values (1) $$",
            "customers"
        ));
        assert!(!mentions(b"select * from customers_archive", "customers"));
        assert!(mentions(b"x.customers", "customers"));
    }
}
