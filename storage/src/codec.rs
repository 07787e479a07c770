//! Compact binary encoding of attribute lists, events and links for the
//! segment files' binary columns.
//!
//! Hand-written rather than a serde format because it is the storage layout
//! we sell on: varint lengths, zigzag integers and one tag byte per value keep
//! a typical span's attributes near the size of their text, and decoding
//! never allocates more than the input can describe (every length is checked
//! against the bytes that remain).

use crate::model::{AttrValue, Attributes, Event, Link, SpanId, TraceId};

/// Input that is not a valid encoding: truncated, an unknown tag, invalid
/// UTF-8, a count larger than the input, or nesting deeper than 32.
#[derive(Debug, thiserror::Error)]
#[error("corrupt encoded value: {0}")]
pub struct DecodeError(&'static str);

const T_EMPTY: u8 = 0;
const T_STR: u8 = 1;
const T_INT: u8 = 2;
const T_DOUBLE: u8 = 3;
const T_BOOL: u8 = 4;
const T_BYTES: u8 = 5;
const T_ARRAY: u8 = 6;
const T_KVLIST: u8 = 7;

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends one value: a tag byte, then strings and bytes with a varint
/// length, integers zigzag varints, doubles 8 bytes LE, booleans one byte,
/// arrays and maps a varint count and their items.
pub fn encode_value(out: &mut Vec<u8>, v: &AttrValue) {
    match v {
        AttrValue::Empty => out.push(T_EMPTY),
        AttrValue::Str(s) => {
            out.push(T_STR);
            put_bytes(out, s.as_bytes());
        }
        AttrValue::Int(i) => {
            out.push(T_INT);
            put_varint(out, ((i << 1) ^ (i >> 63)) as u64);
        }
        AttrValue::Double(d) => {
            out.push(T_DOUBLE);
            out.extend_from_slice(&d.to_le_bytes());
        }
        AttrValue::Bool(b) => {
            out.push(T_BOOL);
            out.push(u8::from(*b));
        }
        AttrValue::Bytes(b) => {
            out.push(T_BYTES);
            put_bytes(out, b);
        }
        AttrValue::Array(a) => {
            out.push(T_ARRAY);
            put_varint(out, a.len() as u64);
            for v in a {
                encode_value(out, v);
            }
        }
        AttrValue::KvList(kv) => {
            out.push(T_KVLIST);
            encode_attrs_into(out, kv);
        }
    }
}

/// Appends an attribute list: a varint count, then each key (varint length
/// and UTF-8) and value ([`encode_value`]), in order.
pub fn encode_attrs_into(out: &mut Vec<u8>, attrs: &Attributes) {
    put_varint(out, attrs.len() as u64);
    for (k, v) in attrs {
        put_bytes(out, k.as_bytes());
        encode_value(out, v);
    }
}

/// [`encode_attrs_into`] of attributes given by reference (a selection of
/// a list), into a new buffer; no attributes encode to no bytes, which
/// [`decode_attrs`] reads back as an empty list.
pub fn encode_attr_refs(attrs: &[(&str, &AttrValue)]) -> Vec<u8> {
    let mut out = Vec::new();
    if attrs.is_empty() {
        return out;
    }
    put_varint(&mut out, attrs.len() as u64);
    for (k, v) in attrs {
        put_bytes(&mut out, k.as_bytes());
        encode_value(&mut out, v);
    }
    out
}

/// Splits `attrs` in two encoded lists: `common`, the attributes whose key
/// `is_common` accepts, each behind its position in `attrs` (a varint
/// count, then per attribute its position as a varint, its key and value);
/// and the rest ([`encode_attr_refs`]). Either is empty when it holds
/// nothing. [`join_attrs`] gives back the list exactly: values, types,
/// repeated keys and order.
///
/// Keys with few distinct values (method, route, status, RPC service...)
/// repeat the same `common` bytes on many records, which a dictionary
/// stores once.
pub fn split_attrs(attrs: &Attributes, is_common: impl Fn(&str) -> bool) -> (Vec<u8>, Vec<u8>) {
    let mut common = Vec::new();
    let mut rest: Vec<(&str, &AttrValue)> = Vec::new();
    let mut n = 0u64;
    for (i, (k, v)) in attrs.iter().enumerate() {
        if is_common(k) {
            n += 1;
            put_varint(&mut common, i as u64);
            put_bytes(&mut common, k.as_bytes());
            encode_value(&mut common, v);
        } else {
            rest.push((k, v));
        }
    }
    if n > 0 {
        let mut head = Vec::with_capacity(common.len() + 2);
        put_varint(&mut head, n);
        head.extend_from_slice(&common);
        common = head;
    }
    (common, encode_attr_refs(&rest))
}

/// The list [`split_attrs`] split into `common` and `rest`. Errors: either
/// undecodable, or positions not increasing or past the list's end.
pub fn join_attrs(common: &[u8], rest: &[u8]) -> Result<Attributes, DecodeError> {
    let rest = decode_attrs(rest)?;
    if common.is_empty() {
        return Ok(rest);
    }
    let mut r = Reader::new(common);
    let m = r.len()?;
    let total = m + rest.len();
    let mut out = Vec::with_capacity(total);
    let mut rest = rest.into_iter();
    for _ in 0..m {
        let pos = usize::try_from(r.varint()?).map_err(|_| DecodeError("attribute position too large"))?;
        if pos < out.len() || pos >= total {
            return Err(DecodeError("attribute position out of order"));
        }
        while out.len() < pos {
            out.push(rest.next().ok_or(DecodeError("attribute position past the rest"))?);
        }
        let k = r.string()?;
        out.push((k, r.value()?));
    }
    out.extend(rest);
    if !r.buf.is_empty() {
        return Err(DecodeError("trailing bytes after the common attributes"));
    }
    Ok(out)
}

/// [`encode_attrs_into`] a new buffer.
pub fn encode_attrs(attrs: &Attributes) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * attrs.len() + 1);
    encode_attrs_into(&mut out, attrs);
    out
}

/// Encodes span events: a varint count, then per event its time (varint,
/// Unix ns), name and attributes. An empty slice encodes to one byte.
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    encode_list(events, |out, e| {
        put_varint(out, e.time_unix_nano);
        put_bytes(out, e.name.as_bytes());
        encode_attrs_into(out, &e.attributes);
    })
}

/// Encodes span links: a varint count, then per link its trace ID (16
/// bytes), span ID (8 bytes), trace state and attributes.
pub fn encode_links(links: &[Link]) -> Vec<u8> {
    encode_list(links, |out, l| {
        out.extend_from_slice(&l.trace_id.0);
        out.extend_from_slice(&l.span_id.0);
        put_bytes(out, l.trace_state.as_bytes());
        encode_attrs_into(out, &l.attributes);
    })
}

/// A varint count, then each item as `item` writes it.
fn encode_list<T>(items: &[T], mut item: impl FnMut(&mut Vec<u8>, &T)) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, items.len() as u64);
    for i in items {
        item(&mut out, i);
    }
    out
}

/// A cursor over encoded bytes. Every read checks the bytes that remain,
/// so corrupt input gives a [`DecodeError`], never a panic or an
/// allocation larger than the input.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    depth: usize,
}

const MAX_DEPTH: usize = 32;

impl<'a> Reader<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, depth: 0 }
    }

    /// Reads an unsigned LEB128 varint.
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or(DecodeError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError("varint too long"))
    }

    /// Reads the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError("length past end"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        // Every element takes at least one byte, so a count larger than the
        // remaining input is corrupt; this bounds allocation by input size.
        usize::try_from(n).ok().filter(|n| *n <= self.buf.len()).ok_or(DecodeError("count larger than input"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("invalid utf-8"))
    }

    /// Reads one [`encode_value`] value.
    pub fn value(&mut self) -> Result<AttrValue, DecodeError> {
        let tag = *self.take(1)?.first().ok_or(DecodeError("empty"))?;
        Ok(match tag {
            T_EMPTY => AttrValue::Empty,
            T_STR => AttrValue::Str(self.string()?),
            T_INT => {
                let z = self.varint()?;
                AttrValue::Int(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            T_DOUBLE => {
                let b = self.take(8)?;
                AttrValue::Double(f64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            T_BOOL => AttrValue::Bool(self.take(1)?[0] != 0),
            T_BYTES => AttrValue::Bytes(self.bytes()?.to_vec()),
            T_ARRAY | T_KVLIST => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(DecodeError("nesting too deep"));
                }
                let v = if tag == T_ARRAY {
                    let n = self.len()?;
                    let mut a = Vec::with_capacity(n);
                    for _ in 0..n {
                        a.push(self.value()?);
                    }
                    AttrValue::Array(a)
                } else {
                    AttrValue::KvList(self.attrs()?)
                };
                self.depth -= 1;
                v
            }
            _ => return Err(DecodeError("unknown value tag")),
        })
    }

    /// Reads one [`encode_attrs_into`] list.
    pub fn attrs(&mut self) -> Result<Attributes, DecodeError> {
        let n = self.len()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.string()?;
            out.push((k, self.value()?));
        }
        Ok(out)
    }
}

/// Decodes one [`encode_value`] value from the start of `b`.
pub fn decode_value(b: &[u8]) -> Result<AttrValue, DecodeError> {
    Reader::new(b).value()
}

/// Decodes [`encode_attrs`] output; empty input is no attributes.
pub fn decode_attrs(b: &[u8]) -> Result<Attributes, DecodeError> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    Reader::new(b).attrs()
}

/// Decodes [`encode_events`] output; empty input is no events.
pub fn decode_events(b: &[u8]) -> Result<Vec<Event>, DecodeError> {
    decode_list(b, |r| {
        let time_unix_nano = r.varint()?;
        let name = r.string()?;
        Ok(Event { time_unix_nano, name, attributes: r.attrs()? })
    })
}

/// Decodes [`encode_links`] output; empty input is no links.
pub fn decode_links(b: &[u8]) -> Result<Vec<Link>, DecodeError> {
    decode_list(b, |r| {
        let trace_id = TraceId::from_slice(r.take(16)?).expect("16 bytes");
        let span_id = SpanId::from_slice(r.take(8)?).expect("8 bytes");
        let trace_state = r.string()?;
        Ok(Link { trace_id, span_id, trace_state, attributes: r.attrs()? })
    })
}

/// The inverse of [`encode_list`]; empty input (a column written before
/// the list existed) is an empty list.
fn decode_list<'a, T>(
    b: &'a [u8],
    mut item: impl FnMut(&mut Reader<'a>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    let mut r = Reader::new(b);
    let n = r.len()?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(item(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = AttrValue> {
        let leaf = prop_oneof![
            Just(AttrValue::Empty),
            ".*".prop_map(AttrValue::Str),
            any::<i64>().prop_map(AttrValue::Int),
            any::<f64>().prop_filter("nan", |d| !d.is_nan()).prop_map(AttrValue::Double),
            any::<bool>().prop_map(AttrValue::Bool),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(AttrValue::Bytes),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttrValue::Array),
                proptest::collection::vec((".*", inner), 0..4).prop_map(AttrValue::KvList),
            ]
        })
    }

    proptest! {
        #[test]
        fn attrs_round_trip(attrs in proptest::collection::vec(("[a-z.]{0,12}", value_strategy()), 0..6)) {
            let enc = encode_attrs(&attrs);
            prop_assert_eq!(decode_attrs(&enc).unwrap(), attrs);
        }

        /// Any list, split by any keys (repeated, of any type), joins back
        /// exactly; garbage in either half never panics.
        #[test]
        fn split_attrs_join_back_exactly(
            attrs in proptest::collection::vec((prop_oneof!["[ab]", "[a-z.]{0,4}"], value_strategy()), 0..8),
            garbage in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let (common, rest) = split_attrs(&attrs, |k| k == "a" || k == "b");
            prop_assert_eq!(join_attrs(&common, &rest).unwrap(), attrs);
            let _ = join_attrs(&garbage, &rest);
            let _ = join_attrs(&common, &garbage);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_attrs(&bytes);
            let _ = decode_events(&bytes);
            let _ = decode_links(&bytes);
            let _ = decode_value(&bytes);
        }
    }

    #[test]
    fn split_attrs_keeps_positions_and_refuses_bad_ones() {
        let attrs: Attributes = vec![
            ("x".into(), AttrValue::Bool(true)),
            ("m".into(), AttrValue::Str("GET".into())),
            ("y".into(), AttrValue::Int(1)),
            ("m".into(), AttrValue::Int(2)),
        ];
        let (common, rest) = split_attrs(&attrs, |k| k == "m");
        let rest_list = decode_attrs(&rest).unwrap();
        assert_eq!(rest_list.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(common[..2], [2, 1], "two common attributes, the first at position 1");
        assert_eq!(join_attrs(&common, &rest).unwrap(), attrs);
        // Nothing common: no common bytes, the rest is the list's encoding.
        let (common, rest) = split_attrs(&attrs, |_| false);
        assert!(common.is_empty());
        assert_eq!(rest, encode_attrs(&attrs));
        assert_eq!(split_attrs(&vec![], |_| true), (vec![], vec![]));
        // Positions out of order, past the end, or trailing bytes.
        let enc = |pos: &[u8]| {
            let mut b = vec![pos.len() as u8];
            for p in pos {
                b.push(*p);
                put_bytes(&mut b, b"k");
                encode_value(&mut b, &AttrValue::Empty);
            }
            b
        };
        assert!(join_attrs(&enc(&[0, 1]), &[]).is_ok());
        assert!(join_attrs(&enc(&[1, 0]), &[]).is_err());
        assert!(join_attrs(&enc(&[2]), &[]).is_err());
        assert!(join_attrs(&[enc(&[0]), vec![0]].concat(), &[]).is_err());
    }

    #[test]
    fn events_and_links_round_trip() {
        let ev = vec![Event {
            time_unix_nano: 42,
            name: "exception".into(),
            attributes: vec![("exception.type".into(), AttrValue::Str("E".into()))],
        }];
        assert_eq!(decode_events(&encode_events(&ev)).unwrap(), ev);
        let l = vec![Link {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([3; 8]),
            trace_state: "a=b".into(),
            attributes: vec![],
        }];
        assert_eq!(decode_links(&encode_links(&l)).unwrap(), l);
    }

    #[test]
    fn empty_lists_and_truncated_lists() {
        assert_eq!(encode_events(&[]), vec![0]);
        assert!(decode_events(&[]).unwrap().is_empty());
        assert!(decode_links(&encode_links(&[])).unwrap().is_empty());
        let l = encode_links(&[Link {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            trace_state: String::new(),
            attributes: vec![],
        }]);
        assert!(decode_links(&l[..l.len() - 1]).is_err());
        let e = encode_events(&[Event { time_unix_nano: u64::MAX, name: "x".into(), attributes: vec![] }]);
        assert_eq!(decode_events(&e).unwrap()[0].time_unix_nano, u64::MAX);
        assert!(decode_events(&e[..3]).is_err());
    }
}
