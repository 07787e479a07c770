//! LogQL log queries, the part Grafana's Loki data source sends for logs:
//! a stream selector (`=`, `!=`, `=~`, `!~`), line filters (`|=`, `!=`,
//! `|~`, `!~`), the `json` and `logfmt` parsers, and label filters
//! (string matchers and numeric comparisons, joined with `and`, `,`, `or`
//! and parentheses). Metric queries and the other pipeline stages are
//! refused with a 400 naming what is not supported. Syntax and meaning
//! follow Loki's LogQL documentation ("Log queries").
//!
//! No Rust LogQL parser fits: `logql` (2022, unmaintained) and
//! `logql-parser` (AGPL-3.0) were looked at, so this small one is written
//! here.
//!
//! How a log record reads as a Loki entry: its stream labels are its
//! resource attributes, names made Prometheus-safe (`service.name` →
//! `service_name`, as Loki's OTLP ingest names them); its structured
//! metadata are its own attributes (same naming), `trace_id` and `span_id`
//! (hex) and `detected_level` (its severity, lowercase); its line is the
//! body (a string as is, anything else as JSON). A selector matches stream
//! labels; a label filter any label, parsed ones included.
//!
//! Execution ([`Engine::logql`]) asks the log search for the newest
//! records that may match (service, trace ID, time range and whole words of
//! `|=` filters narrow it through the indexes) and filters them exactly
//! here; it asks for more, four times as many each round, until it has
//! `limit` entries, the search is exhausted, or `query.max_logql_scan`
//! records were read (then with a warning).

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use skein_storage::filter::{analyzer, LogFilter};
use skein_storage::model::{AttrValue, LogRecord, TraceId};

use super::{Engine, Work};
use crate::error::{Error, Result};
use crate::guard::Pool;

/// A label matcher's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `=~` (the regex matches the whole value)
    Re,
    /// `!~`
    Nre,
}

/// `name op "value"`: in a selector or a label filter. A missing label
/// has the value `""`, as in Loki.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The label's name.
    pub name: String,
    /// The operator.
    pub op: MatchOp,
    /// The value or regex as written.
    pub value: String,
    re: Option<Regex>,
}

impl Matcher {
    fn new(name: String, op: MatchOp, value: String) -> std::result::Result<Self, String> {
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| format!("invalid regex {value:?}: {e}"))?,
            ),
            _ => None,
        };
        Ok(Matcher { name, op, value, re })
    }

    fn matches(&self, v: Option<&str>) -> bool {
        let v = v.unwrap_or("");
        match self.op {
            MatchOp::Eq => v == self.value,
            MatchOp::Ne => v != self.value,
            MatchOp::Re => self.re.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::Nre => !self.re.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }
}

/// A line filter's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOp {
    /// `|=`: contains.
    Contains,
    /// `!=`: does not contain.
    NotContains,
    /// `|~`: a regex matches somewhere in the line.
    Matches,
    /// `!~`: no match in the line.
    NotMatches,
}

/// A numeric comparison in a label filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` (or `=` with a number)
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A label filter expression.
#[derive(Debug, Clone)]
pub enum LabelExpr {
    /// Both hold.
    And(Box<LabelExpr>, Box<LabelExpr>),
    /// Either holds.
    Or(Box<LabelExpr>, Box<LabelExpr>),
    /// A string matcher.
    Str(Matcher),
    /// A numeric comparison; a label that is not a number fails it.
    Num(String, CmpOp, f64),
}

impl LabelExpr {
    fn eval(&self, get: &dyn Fn(&str) -> Option<String>) -> bool {
        match self {
            LabelExpr::And(a, b) => a.eval(get) && b.eval(get),
            LabelExpr::Or(a, b) => a.eval(get) || b.eval(get),
            LabelExpr::Str(m) => m.matches(get(&m.name).as_deref()),
            LabelExpr::Num(name, op, n) => {
                let Some(v) = get(name).and_then(|v| v.trim().parse::<f64>().ok()) else { return false };
                match op {
                    CmpOp::Eq => v == *n,
                    CmpOp::Ne => v != *n,
                    CmpOp::Gt => v > *n,
                    CmpOp::Ge => v >= *n,
                    CmpOp::Lt => v < *n,
                    CmpOp::Le => v <= *n,
                }
            }
        }
    }
}

/// One stage of a log pipeline.
#[derive(Debug, Clone)]
pub enum Stage {
    /// A line filter.
    Line(LineOp, String, Option<Regex>),
    /// `| json`: the line's JSON fields become labels (nested keys joined
    /// with `_`).
    Json,
    /// `| logfmt`: the line's `key=value` pairs become labels.
    Logfmt,
    /// A label filter.
    Labels(LabelExpr),
}

/// A parsed LogQL log query.
#[derive(Debug, Clone)]
pub struct LogQuery {
    /// The stream selector's matchers (all must hold).
    pub selector: Vec<Matcher>,
    /// The pipeline, in order.
    pub stages: Vec<Stage>,
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Pipe,
    PipeEq,
    PipeTilde,
    Bang,
    BangTilde,
    Eq,
    EqEq,
    EqTilde,
    Gt,
    Ge,
    Lt,
    Le,
    Ident(String),
    Str(String),
    Num(f64),
    /// A number with a unit (`5m`, `10KB`), which no supported construct
    /// takes.
    Dur(String),
}

fn lex(s: &str) -> std::result::Result<Vec<(usize, Tok)>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = |n: u8| b.get(i + 1) == Some(&n);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                // A comment runs to the end of the line.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'{' => (Tok::LBrace, 1),
            b'}' => (Tok::RBrace, 1),
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'|' if two(b'=') => (Tok::PipeEq, 2),
            b'|' if two(b'~') => (Tok::PipeTilde, 2),
            b'|' => (Tok::Pipe, 1),
            b'!' if two(b'=') => (Tok::Bang, 2),
            b'!' if two(b'~') => (Tok::BangTilde, 2),
            b'=' if two(b'=') => (Tok::EqEq, 2),
            b'=' if two(b'~') => (Tok::EqTilde, 2),
            b'=' => (Tok::Eq, 1),
            b'>' if two(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'<' if two(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'"' => {
                let (v, n) = quoted(&s[i..]).map_err(|e| format!("at column {}: {e}", i + 1))?;
                (Tok::Str(v), n)
            }
            b'`' => match s[i + 1..].find('`') {
                Some(end) => (Tok::Str(s[i + 1..i + 1 + end].to_string()), end + 2),
                None => return Err(format!("at column {}: unterminated `string`", i + 1)),
            },
            c if c.is_ascii_digit() || (c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                    j += 1;
                }
                let text = &s[i..j];
                match text.parse::<f64>() {
                    Ok(n) => (Tok::Num(n), j - i),
                    Err(_) => (Tok::Dur(text.to_string()), j - i),
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                (Tok::Ident(s[i..j].to_string()), j - i)
            }
            _ => {
                let ch = s[i..].chars().next().unwrap_or(' ');
                return Err(format!("at column {}: unexpected character {ch:?}", i + 1));
            }
        };
        out.push((start, tok));
        i += len;
    }
    Ok(out)
}

/// A double-quoted string at the start of `s` with Go's escapes: its value
/// and its length in bytes, quotes included.
fn quoted(s: &str) -> std::result::Result<(String, usize), String> {
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let e = it.next().map(|x| x.1).ok_or("unterminated string")?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    '\\' | '"' | '\'' | '/' => e,
                    'u' => {
                        let hex: String = (0..4).filter_map(|_| it.next().map(|x| x.1)).collect();
                        u32::from_str_radix(&hex, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| format!("bad escape \\u{hex}"))?
                    }
                    other => return Err(format!("unknown escape \\{other}")),
                });
            }
            c => out.push(c),
        }
    }
    Err("unterminated string".into())
}

// ---- parser ----

/// Pipeline stages Loki has and this API does not, named in the 400.
const UNSUPPORTED_STAGES: [&str; 12] = [
    "line_format",
    "label_format",
    "unwrap",
    "drop",
    "keep",
    "pattern",
    "regexp",
    "unpack",
    "decolorize",
    "distinct",
    "ip",
    "offset",
];

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }
    fn peek2(&self) -> Option<&Tok> {
        self.toks.get(self.pos + 1).map(|t| &t.1)
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.src.len(), |t| t.0) + 1
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.1.clone());
        self.pos += 1;
        t
    }
    fn err<T>(&self, msg: impl std::fmt::Display) -> std::result::Result<T, String> {
        Err(format!("at column {}: {msg}", self.col()))
    }
    fn string(&mut self, what: &str) -> std::result::Result<String, String> {
        match self.peek() {
            Some(Tok::Str(_)) => match self.next() {
                Some(Tok::Str(s)) => Ok(s),
                _ => unreachable!("peeked a string"),
            },
            _ => self.err(format!("expected a quoted string {what}")),
        }
    }

    fn selector(&mut self) -> std::result::Result<Vec<Matcher>, String> {
        if self.next() != Some(Tok::LBrace) {
            self.pos -= 1;
            return self.err("a log query starts with a stream selector such as {service_name=\"api\"}");
        }
        let mut out = Vec::new();
        loop {
            match self.next() {
                Some(Tok::RBrace) => break,
                Some(Tok::Ident(name)) => {
                    let op = match self.next() {
                        Some(Tok::Eq) => MatchOp::Eq,
                        Some(Tok::Bang) => MatchOp::Ne,
                        Some(Tok::EqTilde) => MatchOp::Re,
                        Some(Tok::BangTilde) => MatchOp::Nre,
                        _ => {
                            self.pos -= 1;
                            return self.err(format!("expected =, !=, =~ or !~ after {name:?}"));
                        }
                    };
                    let value = self.string("as the label's value")?;
                    out.push(Matcher::new(name, op, value)?);
                    match self.next() {
                        Some(Tok::Comma) => {}
                        Some(Tok::RBrace) => break,
                        _ => {
                            self.pos -= 1;
                            return self.err("expected ',' or '}' in the stream selector");
                        }
                    }
                }
                _ => {
                    self.pos -= 1;
                    return self.err("expected a label name or '}' in the stream selector");
                }
            }
        }
        if out.is_empty() {
            return self.err("a stream selector needs at least one matcher, such as {service_name=~\".+\"}");
        }
        // Loki refuses a selector that every stream, even one without the
        // labels, would match: it would read everything.
        if out.iter().all(|m| m.matches(None)) {
            return self.err(
                "queries require at least one regexp or equality matcher that does not have an \
                 empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but \
                 app=~\".+\" will",
            );
        }
        Ok(out)
    }

    fn label_or(&mut self) -> std::result::Result<LabelExpr, String> {
        let mut e = self.label_and()?;
        while matches!(self.peek(), Some(Tok::Ident(k)) if k == "or") {
            self.next();
            e = LabelExpr::Or(Box::new(e), Box::new(self.label_and()?));
        }
        Ok(e)
    }

    fn label_and(&mut self) -> std::result::Result<LabelExpr, String> {
        let mut e = self.label_pred()?;
        loop {
            match self.peek() {
                Some(Tok::Ident(k)) if k == "and" => {}
                Some(Tok::Comma) => {}
                _ => return Ok(e),
            }
            self.next();
            e = LabelExpr::And(Box::new(e), Box::new(self.label_pred()?));
        }
    }

    fn label_pred(&mut self) -> std::result::Result<LabelExpr, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.next();
            let e = self.label_or()?;
            if self.next() != Some(Tok::RParen) {
                self.pos -= 1;
                return self.err("expected ')'");
            }
            return Ok(e);
        }
        let name = match self.next() {
            Some(Tok::Ident(n)) => n,
            _ => {
                self.pos -= 1;
                return self.err("expected a label filter such as level=\"error\"");
            }
        };
        let op = self.next();
        match (op, self.peek().cloned()) {
            (Some(t @ (Tok::Eq | Tok::Bang | Tok::EqTilde | Tok::BangTilde)), Some(Tok::Str(_))) => {
                let v = self.string("")?;
                let op = match t {
                    Tok::Eq => MatchOp::Eq,
                    Tok::Bang => MatchOp::Ne,
                    Tok::EqTilde => MatchOp::Re,
                    _ => MatchOp::Nre,
                };
                Ok(LabelExpr::Str(Matcher::new(name, op, v)?))
            }
            (Some(_), Some(Tok::Dur(d))) => self.err(format!(
                "{d:?} is not a number (durations and bytes in label filters are not supported)"
            )),
            (Some(t), Some(Tok::Num(n))) => {
                let op = match t {
                    Tok::Eq | Tok::EqEq => CmpOp::Eq,
                    Tok::Bang => CmpOp::Ne,
                    Tok::Gt => CmpOp::Gt,
                    Tok::Ge => CmpOp::Ge,
                    Tok::Lt => CmpOp::Lt,
                    Tok::Le => CmpOp::Le,
                    _ => {
                        self.pos -= 1;
                        return self.err(format!("operator not allowed with the number after {name:?}"));
                    }
                };
                self.next();
                Ok(LabelExpr::Num(name, op, n))
            }
            _ => {
                self.pos -= 1;
                self.err(format!(
                    "expected a string matcher (=, !=, =~, !~ \"...\") or a comparison with a number after {name:?}"
                ))
            }
        }
    }

    fn stages(&mut self) -> std::result::Result<Vec<Stage>, String> {
        let mut out = Vec::new();
        while let Some(t) = self.next() {
            let line = match t {
                Tok::PipeEq => Some(LineOp::Contains),
                Tok::Bang => Some(LineOp::NotContains),
                Tok::PipeTilde => Some(LineOp::Matches),
                Tok::BangTilde => Some(LineOp::NotMatches),
                Tok::Pipe => None,
                Tok::LBracket => {
                    self.pos -= 1;
                    return self.err(
                        "a range ([5m]) makes a metric query; Skein's Loki API answers log queries only",
                    );
                }
                _ => {
                    self.pos -= 1;
                    return self.err("expected a line filter (|=, !=, |~, !~) or '|' and a stage");
                }
            };
            if let Some(op) = line {
                if matches!(self.peek(), Some(Tok::Ident(i)) if i == "ip") {
                    return self.err("ip() line filters are not supported");
                }
                let text = self.string("after the line filter")?;
                if matches!(self.peek(), Some(Tok::Ident(i)) if i == "or") {
                    return self.err("line filters joined with 'or' are not supported; use |~ \"a|b\"");
                }
                let re = match op {
                    LineOp::Matches | LineOp::NotMatches => {
                        Some(Regex::new(&text).map_err(|e| format!("invalid regex {text:?}: {e}"))?)
                    }
                    _ => None,
                };
                out.push(Stage::Line(op, text, re));
                continue;
            }
            match self.peek().cloned() {
                Some(Tok::Ident(k)) if k == "json" || k == "logfmt" => {
                    self.next();
                    match self.peek() {
                        None
                        | Some(Tok::Pipe | Tok::PipeEq | Tok::PipeTilde | Tok::Bang | Tok::BangTilde) => {}
                        _ => {
                            return self
                                .err(format!("parameters of | {k} are not supported; use | {k} alone"))
                        }
                    }
                    out.push(if k == "json" { Stage::Json } else { Stage::Logfmt });
                }
                Some(Tok::Ident(k))
                    if UNSUPPORTED_STAGES.contains(&k.as_str())
                        && !matches!(
                            self.peek2(),
                            Some(Tok::Eq | Tok::Bang | Tok::EqTilde | Tok::BangTilde | Tok::EqEq | Tok::Gt)
                                | Some(Tok::Ge | Tok::Lt | Tok::Le)
                        ) =>
                {
                    return self.err(format!(
                        "the | {k} stage is not supported; Skein's Loki API takes line filters, | json, \
                         | logfmt and label filters"
                    ));
                }
                _ => out.push(Stage::Labels(self.label_or()?)),
            }
        }
        Ok(out)
    }
}

/// Functions and aggregations that start a metric query.
const METRIC_FUNCTIONS: [&str; 24] = [
    "rate",
    "count_over_time",
    "bytes_rate",
    "bytes_over_time",
    "absent_over_time",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
    "rate_counter",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "sort",
    "vector",
];

impl LogQuery {
    /// Parses a LogQL log query.
    ///
    /// # Errors
    /// A message naming the column and what was expected, or what is not
    /// supported (metric queries, other stages).
    pub fn parse(q: &str) -> std::result::Result<LogQuery, String> {
        let toks = lex(q)?;
        let mut p = Parser { toks, pos: 0, src: q };
        match (p.peek(), p.peek2()) {
            (None, _) => {
                return Err("empty query; give a stream selector such as {service_name=\"api\"}".into())
            }
            (Some(Tok::Ident(f)), _) if METRIC_FUNCTIONS.contains(&f.as_str()) => {
                return Err(format!(
                    "metric queries ({f}(...)) are not supported: Skein's Loki API answers log queries \
                     (a stream selector with line and label filters)"
                ))
            }
            (Some(Tok::Ident(f)), Some(Tok::LParen)) => {
                return Err(format!("{f}(...) is not supported: Skein's Loki API answers log queries only"))
            }
            _ => {}
        }
        let selector = p.selector()?;
        let stages = p.stages()?;
        Ok(LogQuery { selector, stages })
    }

    /// The index conditions that every match meets (a superset of the
    /// matches): the service of a `service_name="x"` matcher, the trace of
    /// a `| trace_id="x"` filter before any parser, and the whole words of
    /// `|=` filters.
    pub fn narrow(&self, start_ns: u64, end_ns: u64) -> LogFilter {
        let mut f = LogFilter { start_ns: Some(start_ns), end_ns: Some(end_ns), ..Default::default() };
        f.service = self
            .selector
            .iter()
            .find(|m| m.name == "service_name" && m.op == MatchOp::Eq)
            .map(|m| m.value.clone());
        let mut an = analyzer();
        for s in &self.stages {
            match s {
                Stage::Json | Stage::Logfmt => break,
                Stage::Labels(LabelExpr::Str(m)) if m.name == "trace_id" && m.op == MatchOp::Eq => {
                    if let Some(id) = TraceId::parse_hex(&m.value).filter(|t| !t.is_zero()) {
                        f.trace_id = Some(id);
                    }
                }
                _ => {}
            }
        }
        for s in &self.stages {
            if let Stage::Line(LineOp::Contains, text, _) = s {
                // Only tokens with a separator on both sides inside the
                // text are whole words of every line that contains it.
                let mut ts = an.token_stream(text);
                while ts.advance() {
                    let t = ts.token();
                    if t.offset_from > 0 && t.offset_to < text.len() {
                        f.words.push(t.text.clone());
                    }
                }
            }
        }
        f
    }

    /// The record as a Loki entry if it passes the selector and pipeline.
    pub fn eval(&self, l: &LogRecord) -> Option<Entry> {
        let stream = stream_labels(l);
        if !self.selector.iter().all(|m| m.matches(stream.get(&m.name).map(String::as_str))) {
            return None;
        }
        let line = line_of(l);
        let metadata = metadata_labels(l);
        let mut parsed: BTreeMap<String, String> = BTreeMap::new();
        for s in &self.stages {
            match s {
                Stage::Line(op, text, re) => {
                    let ok = match op {
                        LineOp::Contains => line.contains(text.as_str()),
                        LineOp::NotContains => !line.contains(text.as_str()),
                        LineOp::Matches => re.as_ref().is_some_and(|r| r.is_match(&line)),
                        LineOp::NotMatches => !re.as_ref().is_some_and(|r| r.is_match(&line)),
                    };
                    if !ok {
                        return None;
                    }
                }
                Stage::Json | Stage::Logfmt => {
                    let fields =
                        if matches!(s, Stage::Json) { parse_json(&line) } else { parse_logfmt(&line) };
                    match fields {
                        Ok(fields) => {
                            for (k, v) in fields {
                                // A name a stream label already has gets
                                // `_extracted`, as in Loki.
                                let k = if stream.contains_key(&k) { format!("{k}_extracted") } else { k };
                                parsed.insert(k, v);
                            }
                        }
                        Err(kind) => {
                            parsed.insert("__error__".into(), kind.into());
                        }
                    }
                }
                Stage::Labels(e) => {
                    let get = |k: &str| {
                        parsed.get(k).or_else(|| metadata.get(k)).or_else(|| stream.get(k)).cloned()
                    };
                    if !e.eval(&get) {
                        return None;
                    }
                }
            }
        }
        Some(Entry { time_ns: l.effective_time(), line, stream, metadata, parsed })
    }
}

/// A record as a Loki entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Its time, Unix ns.
    pub time_ns: u64,
    /// The line.
    pub line: String,
    /// Stream labels (resource attributes).
    pub stream: BTreeMap<String, String>,
    /// Structured metadata (attributes, trace context, level).
    pub metadata: BTreeMap<String, String>,
    /// Labels the parsers extracted.
    pub parsed: BTreeMap<String, String>,
}

/// A name made a Prometheus label name: every character other than ASCII
/// letters, digits and `_` becomes `_`, and a leading digit gets a `_`
/// before it (Loki's OTLP attribute naming).
pub fn label_name(k: &str) -> String {
    let mut s: String =
        k.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

fn value_text(v: &AttrValue) -> String {
    v.as_search_text().unwrap_or_else(|| crate::api::native::json::attr_value(v).to_string())
}

/// The stream labels of a record: its resource attributes, and
/// `service_name` always.
pub fn stream_labels(l: &LogRecord) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> =
        l.resource.attributes.iter().map(|(k, v)| (label_name(k), value_text(v))).collect();
    m.insert("service_name".into(), l.service_name().to_string());
    m
}

/// The structured metadata of a record.
pub fn metadata_labels(l: &LogRecord) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> =
        l.attributes.iter().map(|(k, v)| (label_name(k), value_text(v))).collect();
    if !l.trace_id.is_zero() {
        m.insert("trace_id".into(), l.trace_id.to_hex());
    }
    if let Some(s) = l.span_id {
        m.insert("span_id".into(), s.to_hex());
    }
    let level = if !l.severity_text.is_empty() {
        Some(l.severity_text.to_ascii_lowercase())
    } else {
        match l.severity_number {
            1..=4 => Some("trace"),
            5..=8 => Some("debug"),
            9..=12 => Some("info"),
            13..=16 => Some("warn"),
            17..=20 => Some("error"),
            21..=24 => Some("fatal"),
            _ => None,
        }
        .map(String::from)
    };
    if let Some(level) = level {
        m.entry("detected_level".into()).or_insert(level);
    }
    m
}

/// The line of a record: a string body as is, any other body as JSON,
/// none as "".
pub fn line_of(l: &LogRecord) -> String {
    match &l.body {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Empty => String::new(),
        v => crate::api::native::json::attr_value(v).to_string(),
    }
}

/// A JSON line's fields, nested keys joined with `_`, arrays left out, as
/// Loki's `json` parser without parameters does.
fn parse_json(line: &str) -> std::result::Result<Vec<(String, String)>, &'static str> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        use serde_json::Value;
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    let k = label_name(k);
                    let k = if prefix.is_empty() { k } else { format!("{prefix}_{k}") };
                    walk(&k, v, out);
                }
            }
            Value::Array(_) => {}
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            Value::Null => out.push((prefix.to_string(), String::new())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let v: serde_json::Value = serde_json::from_str(line).map_err(|_| "JSONParserErr")?;
    if !v.is_object() {
        return Err("JSONParserErr");
    }
    let mut out = Vec::new();
    walk("", &v, &mut out);
    Ok(out)
}

/// A logfmt line's `key=value` pairs (values bare or double-quoted with
/// escapes; a key alone is `""`).
fn parse_logfmt(line: &str) -> std::result::Result<Vec<(String, String)>, &'static str> {
    let mut out = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        if i == ks {
            if i < b.len() {
                return Err("LogfmtParserErr");
            }
            break;
        }
        let key = label_name(&line[ks..i]);
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                let (v, n) = quoted(&line[i..]).map_err(|_| "LogfmtParserErr")?;
                value = v;
                i += n;
            } else {
                let vs = i;
                while i < b.len() && b[i] > b' ' {
                    i += 1;
                }
                value = line[vs..i].to_string();
            }
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Which end of the range a query answers from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Newest first (Loki's default).
    #[default]
    Backward,
    /// Oldest first.
    Forward,
}

/// What a LogQL query found.
#[derive(Debug, Clone, Default)]
pub struct LogqlResult {
    /// The entries, in the query's direction.
    pub entries: Vec<Entry>,
    /// Why the answer may be partial.
    pub warnings: Vec<String>,
    /// What the search did.
    pub work: Work,
}

impl Engine {
    /// Runs log query `q` over `[start_ns, end_ns]`: at most `limit`
    /// entries from the `direction` end (see the module comment for how
    /// the scan grows and where it stops).
    pub async fn logql(
        &self,
        q: Arc<LogQuery>,
        start_ns: u64,
        end_ns: u64,
        limit: usize,
        direction: Direction,
    ) -> Result<LogqlResult> {
        self.run(Pool::Search, move |r, cfg, started| {
            let f = q.narrow(start_ns, end_ns);
            let max = cfg.max_logql_scan.max(limit);
            let mut fetch = limit.max(100).min(max);
            let (entries, exhausted) = loop {
                let got = r.search_logs(&f, fetch)?;
                let exhausted = got.len() < fetch;
                let matched: Vec<Entry> = got.iter().filter_map(|l| q.eval(l)).collect();
                let enough = direction == Direction::Backward && matched.len() >= limit;
                if enough || exhausted || fetch >= max {
                    break (matched, exhausted || enough);
                }
                r.ctx().check().map_err(Error::from)?;
                fetch = fetch.saturating_mul(4).min(max);
            };
            let mut entries = entries;
            if direction == Direction::Forward {
                entries.reverse();
            }
            entries.truncate(limit);
            let mut warnings = r.storage().damage_in_range(Some(start_ns), Some(end_ns));
            if !exhausted {
                warnings.push(format!(
                    "only the newest {max} log records that the indexes select were filtered \
                     (query.max_logql_scan); narrow the selector, the time range or add a |= filter"
                ));
            }
            let work = Work::of(r, Some(start_ns), Some(end_ns), started);
            Ok(LogqlResult { entries, warnings, work })
        })
        .await
    }

    /// The stream label names (`name` = `None`) or the values of label
    /// `name`, over the newest `query.max_logql_scan` log records in
    /// `[start_ns, end_ns]` that `selector` (a query whose selector, if
    /// any, they must match) selects; sorted.
    pub async fn loki_labels(
        &self,
        start_ns: u64,
        end_ns: u64,
        name: Option<String>,
        selector: Option<Arc<LogQuery>>,
    ) -> Result<Vec<String>> {
        self.run(Pool::Search, move |r, cfg, _| {
            let f = match &selector {
                Some(q) => q.narrow(start_ns, end_ns),
                None => LogFilter { start_ns: Some(start_ns), end_ns: Some(end_ns), ..Default::default() },
            };
            let mut out = std::collections::BTreeSet::new();
            for l in r.search_logs(&f, cfg.max_logql_scan)? {
                let stream = match &selector {
                    Some(q) => match q.eval(&l) {
                        Some(e) => e.stream,
                        None => continue,
                    },
                    None => stream_labels(&l),
                };
                match &name {
                    None => out.extend(stream.into_keys()),
                    Some(n) => out.extend(stream.get(n).cloned()),
                }
            }
            Ok(out.into_iter().collect())
        })
        .await
    }
}

impl Engine {
    /// The distinct stream label sets of the newest `query.max_logql_scan`
    /// log records in `[start_ns, end_ns]` that match one of `selectors`
    /// (every record's when there is none), sorted (Loki's `series`).
    pub async fn loki_series(
        &self,
        start_ns: u64,
        end_ns: u64,
        selectors: Vec<Arc<LogQuery>>,
    ) -> Result<Vec<BTreeMap<String, String>>> {
        self.run(Pool::Search, move |r, cfg, _| {
            let all = LogFilter { start_ns: Some(start_ns), end_ns: Some(end_ns), ..Default::default() };
            // One selector narrows through the indexes; several are read
            // together and told apart here.
            let f = match selectors.as_slice() {
                [one] => one.narrow(start_ns, end_ns),
                _ => all,
            };
            let mut out = std::collections::BTreeSet::new();
            for l in r.search_logs(&f, cfg.max_logql_scan)? {
                if selectors.is_empty() {
                    out.insert(stream_labels(&l));
                } else if let Some(e) = selectors.iter().find_map(|q| q.eval(&l)) {
                    out.insert(e.stream);
                }
            }
            Ok(out.into_iter().collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use skein_storage::model::{Resource, Scope, SpanId};

    /// Valid queries, each with the number of selector matchers and
    /// stages it parses to.
    #[test]
    fn valid_queries() {
        for (q, matchers, stages) in [
            (r#"{service_name="frontend"}"#, 1, 0),
            (r#"{service_name="frontend"} |= "0af7651916cd43dd8448eb211c80319c""#, 1, 1),
            (r#"{service_name="frontend"} | trace_id="0af7651916cd43dd8448eb211c80319c""#, 1, 1),
            (r#"{a="b", c!="d", e=~"f.*", g!~"h|i"}"#, 4, 0),
            (r#"{app="x"} |= "err" != "timeout" |~ "code=5\\d\\d" !~ `(?i)debug`"#, 1, 4),
            (r#"{app="x"} | json | level="error""#, 1, 2),
            (r#"{app="x"} | logfmt | status >= 500 and method="GET""#, 1, 2),
            (r#"{app="x"} | json | level="error" or (status > 499, status < 600)"#, 1, 2),
            (r#"{app="x"} | duration == 2.5 | n != -1"#, 1, 2),
            ("{app=\"x\"} # a comment\n |= \"y\"", 1, 1),
            (r#"{app="\"quoted\" \u00e9"}"#, 1, 0),
        ] {
            let p = LogQuery::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
            assert_eq!((p.selector.len(), p.stages.len()), (matchers, stages), "{q}");
        }
        let p = LogQuery::parse(r#"{app="\"quoted\" \u00e9"}"#).unwrap();
        assert_eq!(p.selector[0].value, "\"quoted\" é");
    }

    /// Invalid or unsupported queries, each with a part of its message.
    #[test]
    fn invalid_queries() {
        for (q, msg) in [
            ("", "empty query"),
            ("rate({app=\"x\"}[5m])", "metric queries"),
            ("sum by (app) (count_over_time({app=\"x\"}[1m]))", "metric queries"),
            ("{app=\"x\"}[5m]", "metric query"),
            ("label_replace({a=\"b\"}, \"x\", \"y\", \"z\", \"w\")", "not supported"),
            ("{}", "at least one matcher"),
            ("{service_name=~\".*\"}", "empty-compatible"),
            ("{service_name!=\"api\"}", "empty-compatible"),
            ("{service_name=\"\"}", "empty-compatible"),
            ("app=\"x\"", "stream selector"),
            ("{app=\"x\"", "expected"),
            ("{app=x}", "quoted string"),
            ("{app=\"x\"} |= ", "quoted string"),
            ("{app=\"x\"} |= \"a\" or \"b\"", "'or'"),
            ("{app=\"x\"} | line_format \"{{.msg}}\"", "line_format stage is not supported"),
            ("{app=\"x\"} | json msg=\"message\"", "parameters of | json"),
            ("{app=\"x\"} | pattern \"<ip> <_>\"", "pattern stage"),
            ("{app=\"x\"} |~ \"(\"", "invalid regex"),
            ("{app=~\"(\"}", "invalid regex"),
            ("{app=\"x\"} | level", "expected a string matcher"),
            ("{app=\"x\"} | status > \"a\"", "expected a string matcher"),
            ("{app=\"x\"} | status > 5m", "not a number"),
            ("{app=\"x\"} @", "unexpected character"),
            ("{app=\"unterminated}", "unterminated"),
        ] {
            let e = LogQuery::parse(q).expect_err(q);
            assert!(e.contains(msg), "{q}: {e}");
        }
    }

    fn record(body: &str, service: &str, attrs: &[(&str, &str)]) -> LogRecord {
        LogRecord {
            time_unix_nano: 1_000,
            observed_time_unix_nano: 0,
            severity_number: 17,
            severity_text: String::new(),
            body: AttrValue::Str(body.into()),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), AttrValue::Str(v.to_string()))).collect(),
            trace_id: TraceId([1; 16]),
            span_id: Some(SpanId([2; 8])),
            flags: 0,
            event_name: String::new(),
            resource: Arc::new(Resource {
                service_name: service.into(),
                attributes: vec![
                    ("service.name".into(), AttrValue::Str(service.into())),
                    ("k8s.pod.name".into(), AttrValue::Str("pod-1".into())),
                ],
            }),
            scope: Arc::new(Scope::default()),
        }
    }

    #[test]
    fn evaluation() {
        let l = record(r#"{"level":"error","http":{"status":503},"msg":"upstream timeout"}"#, "shop", &[]);
        let m = |q: &str| LogQuery::parse(q).unwrap().eval(&l).is_some();
        assert!(m(r#"{service_name="shop"}"#));
        assert!(m(r#"{service_name=~"sh.*", k8s_pod_name="pod-1"}"#));
        assert!(!m(r#"{service_name=~"sh"}"#), "regex matchers are anchored");
        assert!(!m(r#"{service_name=~".+", service_name!="shop"}"#));
        assert!(m(r#"{service_name="shop", missing!="x"}"#) && m(r#"{service_name="shop", missing=""}"#));
        assert!(m(r#"{service_name="shop"} |= "upstream" != "debug" |~ "time(out)?""#));
        assert!(!m(r#"{service_name="shop"} |= "Upstream""#), "line filters are case-sensitive");
        assert!(m(r#"{service_name="shop"} |~ "(?i)Upstream""#));
        assert!(m(r#"{service_name="shop"} | json | level="error" and http_status >= 500"#));
        assert!(!m(r#"{service_name="shop"} | json | http_status < 500"#));
        assert!(m(r#"{service_name="shop"} | trace_id="01010101010101010101010101010101""#));
        assert!(m(r#"{service_name="shop"} | detected_level="error" | span_id="0202020202020202""#));
        assert!(!m(r#"{service_name="shop"} | logfmt | __error__="""#));
        let e = LogQuery::parse(r#"{service_name="shop"} | json"#).unwrap().eval(&l).unwrap();
        assert_eq!(e.parsed.get("http_status").map(String::as_str), Some("503"));
        assert_eq!(e.stream.get("service_name").map(String::as_str), Some("shop"));
        assert_eq!(e.metadata.get("trace_id").map(String::as_str), Some(&*"01".repeat(16)));

        let l = record(r#"level=warn msg="slow \"db\" call" took=1.5 flag"#, "shop", &[("user", "u1")]);
        let e =
            LogQuery::parse(r#"{service_name="shop"} | logfmt | level="warn" | took > 1"#).unwrap().eval(&l);
        let e = e.unwrap();
        assert_eq!(e.parsed.get("msg").map(String::as_str), Some("slow \"db\" call"));
        assert_eq!(e.parsed.get("flag").map(String::as_str), Some(""));
        assert!(LogQuery::parse(r#"{service_name="shop"} | user="u1""#).unwrap().eval(&l).is_some());
        // A parsed name that is a stream label gets _extracted.
        let l = record(r#"{"service_name":"other"}"#, "shop", &[]);
        let e = LogQuery::parse(r#"{service_name="shop"} | json"#).unwrap().eval(&l).unwrap();
        assert_eq!(e.parsed.get("service_name_extracted").map(String::as_str), Some("other"));
    }

    #[test]
    fn narrowing_keeps_every_match() {
        let q = LogQuery::parse(
            r#"{service_name="frontend"} | trace_id="0af7651916cd43dd8448eb211c80319c" |= "GET /api/cart 500""#,
        )
        .unwrap();
        let f = q.narrow(1, 2);
        assert_eq!(f.service.as_deref(), Some("frontend"));
        assert_eq!(f.trace_id.unwrap().to_hex(), "0af7651916cd43dd8448eb211c80319c");
        // "GET" and "500" may be parts of longer words in a line.
        assert_eq!(f.words, vec!["api", "cart"]);
        let f = LogQuery::parse(r#"{service_name=~"f.*"} | json | trace_id="01""#).unwrap().narrow(1, 2);
        assert!(f.service.is_none() && f.trace_id.is_none());
    }

    proptest! {
        /// Arbitrary text never panics the parser, and whatever parses
        /// evaluates without panicking.
        #[test]
        fn arbitrary_queries_never_panic(q in ".{0,64}", tail in "[|!=~{}\"a-z_ ()0-9<>,.`-]{0,40}") {
            let l = record(r#"{"a":1} x=y"#, "s", &[("k", "v")]);
            for text in [q.clone(), format!("{{a=\"b\"}}{tail}"), format!("{{a=\"b\"}} | json {tail}")] {
                if let Ok(p) = LogQuery::parse(&text) {
                    let _ = p.eval(&l);
                    let _ = p.narrow(0, 1);
                }
            }
        }
    }
}
