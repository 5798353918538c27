//! The wire side of column encryption: Bind values encrypted on the way in, DataRow values
//! decrypted on the way out. Messages without a designated column are never decoded here.

use std::sync::Arc;

use bytes::BufMut;

use super::plan::{Plan, Purpose, Reveal};
use super::{ColumnId, DecryptError, Mode};
use crate::protocol::messages::{tag, Reader};
use crate::protocol::{Frame, ProxyError};
use crate::sql::CompareOp;

/// The designated columns of one result, by field position, and how this user sees them.
#[derive(Debug)]
pub struct ResultMap {
    pub plan: Arc<Plan>,
    /// The statement of the plan the result belongs to.
    pub statement: usize,
    pub fields: Vec<(usize, ColumnId, Reveal)>,
    /// Fields not in `fields` may still carry a ciphertext (see `Plan::candidates`).
    pub probe: bool,
}

/// The map of a result from its RowDescription; None when no field is designated.
pub fn result_map(
    plan: &Arc<Plan>,
    statement: usize,
    row_description: &[u8],
) -> Result<Option<Arc<ResultMap>>, ProxyError> {
    let mut r = Reader::new(row_description);
    let count = r.i16()?;
    let mut fields = Vec::new();
    for index in 0..count.max(0) as usize {
        r.cstr_bytes()?;
        let table_oid = r.i32()? as u32;
        let attnum = r.i16()?;
        r.take(4 + 2 + 4 + 2)?;
        if let Some(id) = plan.result_column(statement, index, table_oid, attnum) {
            fields.push((index, id, plan.reveal[id.index()]));
        }
    }
    Ok(expected(plan, statement, fields, count.max(0) as usize))
}

/// The map of a result as the analysis alone sees it (an Execute with no RowDescription).
pub fn planned_map(plan: &Arc<Plan>, statement: usize) -> Option<Arc<ResultMap>> {
    let outputs = plan
        .statements
        .get(statement)
        .map(|s| s.outputs.as_slice())
        .unwrap_or_default();
    let fields = outputs
        .iter()
        .enumerate()
        .filter_map(|(i, id)| id.map(|id| (i, id, plan.reveal[id.index()])))
        .collect();
    expected(plan, statement, fields, usize::MAX)
}

/// A map of `width` fields (`usize::MAX`: not known); None when no field can hold a
/// designated column's value.
fn expected(
    plan: &Arc<Plan>,
    statement: usize,
    fields: Vec<(usize, ColumnId, Reveal)>,
    width: usize,
) -> Option<Arc<ResultMap>> {
    let unmapped = width > fields.len() && !plan.candidates.is_empty();
    (!fields.is_empty() || unmapped).then(|| {
        Arc::new(ResultMap {
            plan: plan.clone(),
            statement,
            fields,
            probe: unmapped,
        })
    })
}

/// The DataRow `body` with its designated values decrypted (or hidden), as a new frame:
/// one pass over the fields, written straight into the new message.
pub fn decrypt_row(map: &ResultMap, body: &[u8]) -> Result<Frame, ProxyError> {
    let mut r = Reader::new(body);
    let count = r.i16()?;
    let mut out = bytes::BytesMut::with_capacity(body.len() + 5);
    out.put_u8(b'D');
    out.put_i32(0);
    out.put_i16(count);
    for index in 0..count.max(0) as usize {
        let len = r.i32()?;
        if len < 0 {
            out.put_i32(-1);
            continue;
        }
        let stored = r.take(len as usize)?;
        let mapped = map.fields.iter().find(|f| f.0 == index);
        let target = match mapped {
            Some(&(_, id, reveal)) => Some((id, reveal)),
            None if map.probe && super::looks_like_envelope(stored) => probe(map, stored),
            None => None,
        };
        match target {
            None | Some((_, Reveal::Ciphertext)) => {
                out.put_i32(len);
                out.put_slice(stored);
            }
            Some((_, Reveal::Null)) => out.put_i32(-1),
            Some((id, Reveal::Plaintext)) => {
                let at = out.len();
                out.put_i32(0);
                map.plan
                    .crypto
                    .by_id(id)
                    .decrypt_into(stored, &mut out)
                    .map_err(undecryptable)?;
                let written = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&written.to_be_bytes());
            }
        }
    }
    let total = (out.len() - 1) as i32;
    out[1..5].copy_from_slice(&total.to_be_bytes());
    Ok(Frame::from_bytes(out.freeze()))
}

/// The candidate column whose key authenticates a value the map does not name (a scalar
/// subquery, a UNION of two columns): the envelope is bound to its column, so a success is
/// never a guess. None when no candidate opens it (it stays as it is).
fn probe(map: &ResultMap, stored: &[u8]) -> Option<(ColumnId, Reveal)> {
    map.plan
        .candidates
        .iter()
        .find(|id| map.plan.crypto.by_id(**id).try_decrypt(stored).is_ok())
        .map(|&id| (id, map.plan.reveal[id.index()]))
}

/// The client's error for a value that does not decrypt.
pub fn undecryptable(e: DecryptError) -> ProxyError {
    ProxyError::Undecryptable(format!("pgward: {e}"))
}

/// Parameters pgward added to a statement for a search during a key rotation: the value of
/// client parameter `index` (0-based) is also sent, under the other keys, in `slots`.
#[derive(Debug, Clone)]
pub struct ExtraParams {
    pub index: usize,
    pub slots: Vec<usize>,
}

/// The Bind `body` with the parameters the plan names encrypted (and those pgward added
/// filled in), as a new frame. The designated columns are text, whose binary and text
/// formats are the same bytes, so format codes stay as the client sent them.
pub fn encrypt_bind(plan: &Plan, extra: &[ExtraParams], body: &[u8]) -> Result<Frame, ProxyError> {
    let mut r = Reader::new(body);
    let portal = r.cstr_bytes()?;
    let statement = r.cstr_bytes()?;
    let nformats = r.i16()?;
    let formats = r.take(nformats.max(0) as usize * 2)?;
    let nparams = r.i16()?;
    let mut params: Vec<Option<&[u8]>> = Vec::with_capacity(nparams.max(0) as usize);
    for _ in 0..nparams.max(0) {
        let len = r.i32()?;
        params.push(if len < 0 {
            None
        } else {
            Some(r.take(len as usize)?)
        });
    }
    let rest = r.rest();
    let added: usize = extra.iter().map(|e| e.slots.len()).sum();
    let total = params.len() + added;
    let mut encrypted: Vec<Option<Vec<u8>>> = vec![None; total];
    for edit in &plan.params {
        let Some(Some(value)) = params.get(edit.index) else {
            continue; // NULL stays NULL; a missing parameter is the server's error to report
        };
        let cipher = plan.crypto.by_id(edit.id);
        let envelope = match edit.purpose {
            Purpose::Write => cipher.encrypt(value),
            Purpose::Search { .. } => {
                let mut all = cipher.search_envelopes(value).into_iter();
                let first = all.next().unwrap_or_default();
                let slots = extra
                    .iter()
                    .find(|e| e.index == edit.index)
                    .map_or(&[][..], |e| e.slots.as_slice());
                let rest: Vec<String> = all.collect();
                if rest.len() > slots.len() {
                    return Err(ProxyError::Unsupported(format!(
                        "pgward: encrypted column {} has a new key since this statement was prepared; prepare it again",
                        cipher.name()
                    )));
                }
                for (k, slot) in slots.iter().enumerate() {
                    // Fewer keys than when prepared: repeat one; it matches the same rows.
                    let value = rest.get(k).unwrap_or(&first);
                    encrypted[*slot] = Some(value.clone().into_bytes());
                }
                first
            }
        };
        encrypted[edit.index] = Some(envelope.into_bytes());
    }
    Ok(Frame::build(tag::BIND, |b| {
        b.put_slice(portal);
        b.put_u8(0);
        b.put_slice(statement);
        b.put_u8(0);
        // Per-parameter formats cover the added parameters too (text).
        let per_param = nformats > 1;
        b.put_i16(if per_param { total as i16 } else { nformats });
        b.put_slice(formats);
        if per_param {
            for _ in 0..added {
                b.put_i16(0);
            }
        }
        b.put_i16(total as i16);
        for (i, encrypted) in encrypted.iter().enumerate() {
            let param = params.get(i).copied().flatten();
            match (encrypted, param) {
                (Some(value), _) => {
                    b.put_i32(value.len() as i32);
                    b.put_slice(value);
                }
                (None, Some(value)) => {
                    b.put_i32(value.len() as i32);
                    b.put_slice(value);
                }
                (None, None) => b.put_i32(-1),
            }
        }
        b.put_slice(rest);
    }))
}

/// The SQL text replacing a literal: its ciphertext, or for a search while a column holds
/// values under several keys, every key's ciphertext in a form the comparison accepts.
pub fn literal_replacement(
    plan: &Plan,
    id: ColumnId,
    purpose: Purpose,
    value: &[u8],
) -> Result<String, ProxyError> {
    let cipher = plan.crypto.by_id(id);
    let quoted = |e: &str| format!("'{e}'");
    match purpose {
        Purpose::Write => Ok(quoted(&cipher.encrypt(value))),
        Purpose::Search { op, value_first } => {
            debug_assert_eq!(cipher.mode(), Mode::Deterministic);
            let all: Vec<String> = cipher
                .search_envelopes(value)
                .iter()
                .map(|e| quoted(e))
                .collect();
            if all.len() == 1 {
                return Ok(all.into_iter().next().expect("one"));
            }
            let list = all.join(", ");
            match (op, value_first) {
                (CompareOp::Eq, false) => Ok(format!("ANY (ARRAY[{list}])")),
                (CompareOp::NotEq, false) => Ok(format!("ALL (ARRAY[{list}])")),
                (CompareOp::In | CompareOp::NotIn, _) => Ok(list),
                _ => Err(ProxyError::Unsupported(format!(
                    "pgward: encrypted column {} is being rotated to a new key; write the comparison as `column = value`, `column <> value` or `column IN (...)`",
                    cipher.name()
                ))),
            }
        }
    }
}

/// A ParameterDescription listing only the first `count` parameters (those the client knows
/// of; pgward's own come after them).
pub fn trim_parameter_description(body: &[u8], count: usize) -> Result<Frame, ProxyError> {
    let mut r = Reader::new(body);
    let n = r.i16()?.max(0) as usize;
    let types = r.take(n * 4)?;
    let keep = count.min(n);
    Ok(Frame::build(b't', |b| {
        b.put_i16(keep as i16);
        b.put_slice(&types[..keep * 4]);
    }))
}
