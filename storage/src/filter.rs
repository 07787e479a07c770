//! Search conditions, evaluated in memory (head) and translated to index
//! queries (segments). Keeping both in one place keeps their meaning equal.

use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer};

use crate::model::{status, LogRecord, Span};

/// Conditions on one span (Jaeger semantics): a trace matches when one of
/// its spans meets all of them.
#[derive(Debug, Clone, Default)]
pub struct SpanFilter {
    /// The span's `service.name` equals this.
    pub service: Option<String>,
    /// The span's name equals this.
    pub operation: Option<String>,
    /// `key=value` pairs; a span matches when its own or its resource's
    /// attribute `key` has the scalar value `value` (compared as text), or
    /// is an array with such an element
    /// ([`crate::model::AttrValue::matches_search_text`]).
    pub attrs: Vec<(String, String)>,
    /// The span lasts at least this long (ns, inclusive).
    pub min_duration_ns: Option<u64>,
    /// The span lasts at most this long (ns, inclusive).
    pub max_duration_ns: Option<u64>,
    /// The span's status is (not) ERROR.
    pub status: Option<StatusFilter>,
    /// Lower bound on the span's start time, inclusive, Unix ns.
    pub start_ns: Option<u64>,
    /// Upper bound on the span's start time, inclusive, Unix ns.
    pub end_ns: Option<u64>,
}

/// A condition on a span's status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Status code ERROR.
    Error,
    /// Not ERROR (OK or UNSET).
    Ok,
}

impl SpanFilter {
    /// Whether span `s` meets every condition.
    pub fn matches(&self, s: &Span) -> bool {
        if let Some(svc) = &self.service {
            if s.service_name() != svc {
                return false;
            }
        }
        if let Some(op) = &self.operation {
            if &s.name != op {
                return false;
            }
        }
        let d = s.duration_ns();
        if self.min_duration_ns.is_some_and(|m| d < m) || self.max_duration_ns.is_some_and(|m| d > m) {
            return false;
        }
        match self.status {
            Some(StatusFilter::Error) if s.status_code != status::ERROR => return false,
            Some(StatusFilter::Ok) if s.status_code == status::ERROR => return false,
            _ => {}
        }
        if self.start_ns.is_some_and(|t| s.start_time_unix_nano < t)
            || self.end_ns.is_some_and(|t| s.start_time_unix_nano > t)
        {
            return false;
        }
        self.attrs.iter().all(|(k, v)| {
            s.attributes
                .iter()
                .chain(s.resource.attributes.iter())
                .any(|(ak, av)| ak == k && av.matches_search_text(v))
        })
    }
}

/// Severity numbers per the OTel logs data model: each named level spans
/// four numbers (TRACE 1-4, DEBUG 5-8, INFO 9-12, WARN 13-16, ERROR 17-20,
/// FATAL 21-24).
pub fn parse_severity(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (0..=24).contains(&n).then_some(n);
    }
    Some(match s.to_ascii_uppercase().as_str() {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" | "WARNING" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => return None,
    })
}

/// Conditions on log records.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Words that must all appear in the body or in an attribute value,
    /// case-insensitively (already tokenized with [`analyzer`]).
    pub words: Vec<String>,
    /// The record's resource `service.name` equals this.
    pub service: Option<String>,
    /// Minimum severity number.
    pub min_severity: Option<i32>,
    /// The record belongs to this trace.
    pub trace_id: Option<crate::model::TraceId>,
    /// Lower bound on the record's time ([`LogRecord::effective_time`]),
    /// inclusive, Unix ns.
    pub start_ns: Option<u64>,
    /// Upper bound on the record's time, inclusive, Unix ns.
    pub end_ns: Option<u64>,
}

/// The text analysis shared by the log index and in-memory matching.
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .build()
}

/// Appends the tokens of `text` (as analyzer `a` cuts them) to `out`.
pub fn tokenize(a: &mut TextAnalyzer, text: &str, out: &mut Vec<String>) {
    let mut ts = a.token_stream(text);
    while ts.advance() {
        out.push(ts.token().text.clone());
    }
}

/// The searchable text of a log: body and attribute values.
pub fn log_text(l: &LogRecord, mut f: impl FnMut(&str)) {
    fn walk(v: &crate::model::AttrValue, f: &mut dyn FnMut(&str)) {
        use crate::model::AttrValue::*;
        match v {
            Str(s) => f(s),
            Int(_) | Double(_) | Bool(_) => {
                if let Some(t) = v.as_search_text() {
                    f(&t)
                }
            }
            Array(a) => a.iter().for_each(|v| walk(v, f)),
            KvList(kv) => kv.iter().for_each(|(_, v)| walk(v, f)),
            Empty | Bytes(_) => {}
        }
    }
    walk(&l.body, &mut f);
    for (_, v) in &l.attributes {
        walk(v, &mut f);
    }
}

impl LogFilter {
    /// Whether record `l` meets every condition; `a` is an [`analyzer`],
    /// passed in so a scan reuses one.
    pub fn matches(&self, l: &LogRecord, a: &mut TextAnalyzer) -> bool {
        if let Some(svc) = &self.service {
            if l.service_name() != svc {
                return false;
            }
        }
        if self.min_severity.is_some_and(|m| l.severity_number < m) {
            return false;
        }
        if let Some(t) = &self.trace_id {
            if &l.trace_id != t {
                return false;
            }
        }
        let t = l.effective_time();
        if self.start_ns.is_some_and(|s| t < s) || self.end_ns.is_some_and(|e| t > e) {
            return false;
        }
        if self.words.is_empty() {
            return true;
        }
        let mut toks = Vec::new();
        log_text(l, |s| tokenize(a, s, &mut toks));
        self.words.iter().all(|w| toks.iter().any(|t| t == w))
    }
}
