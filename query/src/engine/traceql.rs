//! A subset of TraceQL (Grafana Tempo's trace query language), parsed by hand
//! with recursive descent and evaluated one trace at a time.
//!
//! Supported:
//! - spanset filters `{ cond }`; `{}` and `{ true }` select every span;
//! - conditions with `&&`, `||`, `!` and parentheses (`&&` binds tighter than
//!   `||`), comparisons `=`, `!=`, `>`, `>=`, `<`, `<=`, and `=~`, `!~` with
//!   patterns made of literal text and `.*` (anchored at both ends, as in
//!   Tempo; `\` escapes a metacharacter, a leading `^` and trailing `$` are
//!   accepted);
//! - intrinsics `name`, `status`, `kind`, `duration`, `statusMessage`, their
//!   `span:` forms, and `trace:rootService`, `trace:rootName`,
//!   `trace:duration` (also spelled `rootServiceName`, `rootName`,
//!   `traceDuration`);
//! - attributes `span.key`, `resource.key`, `.key` (span, then resource);
//!   keys may contain dots or be quoted (`span."a b"`); `resource.service.name`
//!   is the span's service name; `attr = nil` / `attr != nil` test presence;
//! - literals: strings (`"..."` with `\" \\ \n \t \r` escapes, or raw
//!   `` `...` ``), integers, floats, `true`/`false`, durations (`250ms`,
//!   `1.5s`, `1h30m`; units ns us µs ms s m h), statuses and kinds;
//! - spanset operators `&&`, `||`, `>` (child), `>>` (descendant), `~`
//!   (sibling), with parentheses. Structural operators bind tighter than
//!   `&&`, which binds tighter than `||`.
//!
//! Comparisons follow Tempo: ints and floats compare numerically, a missing
//! attribute or a value of another type makes any comparison false
//! (including `!=`), strings order lexicographically.
//!
//! Not supported (a parse error that says "not supported"): pipelines `|`,
//! aggregates, `select`, `by`, `coalesce`, arithmetic, the `event`, `link`,
//! `instrumentation` and `parent` scopes, the negated/union/ancestor
//! structural operators, and any regex syntax beyond literal text and `.*`.

use std::cmp::Ordering;
use std::collections::HashMap;

use skein_storage::filter::{SpanFilter, StatusFilter};
use skein_storage::model::{kind, status, AttrValue, Span, SpanId};

/// The deepest nesting of parentheses, braces and `!` a query may have.
const MAX_DEPTH: usize = 64;

/// A parsed TraceQL query.
#[derive(Debug, Clone)]
pub struct TraceQl {
    root: Spanset,
    /// Whether evaluation needs the parent links (structural operators).
    needs_tree: bool,
}

/// Why a TraceQL query was refused (answered as 400 by every API).
#[derive(Debug, thiserror::Error)]
pub enum TraceQlError {
    /// The query does not parse.
    #[error("TraceQL: {msg} at position {pos}")]
    Parse {
        /// What was expected or found.
        msg: String,
        /// The byte offset in the query where the problem was found.
        pos: usize,
    },
}

type Result<T> = std::result::Result<T, TraceQlError>;

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T> {
    Err(TraceQlError::Parse { msg: msg.into(), pos })
}

// ---------------------------------------------------------------------------
// AST

#[derive(Debug, Clone)]
enum Spanset {
    Filter(Expr),
    And(Vec<Spanset>),
    Or(Vec<Spanset>),
    /// `first op1 s1 op2 s2 ...`, left-associative.
    Chain(Box<Spanset>, Vec<(StructOp, Spanset)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StructOp {
    Child,
    Descendant,
    Sibling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrScope {
    Span,
    Resource,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intrinsic {
    Name,
    Status,
    Kind,
    Duration,
    StatusMessage,
    RootService,
    RootName,
    TraceDuration,
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(u64),
    Status(u8),
    Kind(u8),
    Nil,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn flip(self) -> CmpOp {
        match self {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            o => o,
        }
    }

    fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }

    fn test(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
        }
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Lit(Lit),
    Attr(AttrScope, String),
    Intr(Intrinsic),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    /// `lhs =~ pattern` (or `!~` when `negated`).
    Match {
        lhs: Box<Expr>,
        negated: bool,
        glob: Glob,
    },
}

/// The static type of an expression; `Any` for attributes (known only at
/// evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Bool,
    Str,
    Num,
    Dur,
    Status,
    Kind,
    Nil,
    Any,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Bool => "a boolean",
            Ty::Str => "a string",
            Ty::Num => "a number",
            Ty::Dur => "a duration",
            Ty::Status => "a status",
            Ty::Kind => "a kind",
            Ty::Nil => "nil",
            Ty::Any => "an attribute",
        }
    }
}

impl Expr {
    fn ty(&self) -> Ty {
        match self {
            Expr::Lit(l) => match l {
                Lit::Str(_) => Ty::Str,
                Lit::Int(_) | Lit::Float(_) => Ty::Num,
                Lit::Bool(_) => Ty::Bool,
                Lit::Dur(_) => Ty::Dur,
                Lit::Status(_) => Ty::Status,
                Lit::Kind(_) => Ty::Kind,
                Lit::Nil => Ty::Nil,
            },
            Expr::Attr(..) => Ty::Any,
            Expr::Intr(i) => match i {
                Intrinsic::Name | Intrinsic::StatusMessage | Intrinsic::RootService | Intrinsic::RootName => {
                    Ty::Str
                }
                Intrinsic::Status => Ty::Status,
                Intrinsic::Kind => Ty::Kind,
                Intrinsic::Duration | Intrinsic::TraceDuration => Ty::Dur,
            },
            Expr::Not(_) | Expr::And(_) | Expr::Or(_) | Expr::Cmp(..) | Expr::Match { .. } => Ty::Bool,
        }
    }
}

/// A regular expression restricted to literal text and `.*`, anchored at
/// both ends: the text must start with the first part, end with the last,
/// and contain the others in order in between.
#[derive(Debug, Clone, PartialEq)]
struct Glob {
    parts: Vec<String>,
}

impl Glob {
    /// `pos` is where the pattern's string literal starts, for errors.
    fn compile(pattern: &str, pos: usize) -> Result<Glob> {
        let unsupported = |what: String| {
            err(
                pos,
                format!(
                    "not supported: regex {what} in {pattern:?}; only literal text and `.*` wildcards \
                     are supported (escape a metacharacter with a backslash)"
                ),
            )
        };
        let chars: Vec<char> = pattern.chars().collect();
        let mut parts = vec![String::new()];
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '\\' => {
                    let Some(&n) = chars.get(i + 1) else {
                        return unsupported("trailing `\\`".into());
                    };
                    if !is_regex_meta(n) {
                        return unsupported(format!("escape `\\{n}`"));
                    }
                    parts.last_mut().expect("non-empty").push(n);
                    i += 2;
                    continue;
                }
                '.' if chars.get(i + 1) == Some(&'*') => {
                    parts.push(String::new());
                    i += 2;
                    continue;
                }
                '^' if i == 0 => {}
                '$' if i + 1 == chars.len() => {}
                '.' => return unsupported("`.` not followed by `*`".into()),
                c if is_regex_meta(c) => return unsupported(format!("syntax `{c}`")),
                c => parts.last_mut().expect("non-empty").push(c),
            }
            i += 1;
        }
        Ok(Glob { parts })
    }

    fn matches(&self, s: &str) -> bool {
        let parts = &self.parts;
        if parts.len() == 1 {
            return s == parts[0];
        }
        let (first, last) = (&parts[0], &parts[parts.len() - 1]);
        if s.len() < first.len() + last.len() || !s.starts_with(first.as_str()) || !s.ends_with(last.as_str())
        {
            return false;
        }
        let mut rest = &s[first.len()..s.len() - last.len()];
        for p in &parts[1..parts.len() - 1] {
            match rest.find(p.as_str()) {
                Some(i) => rest = &rest[i + p.len()..],
                None => return false,
            }
        }
        true
    }
}

fn is_regex_meta(c: char) -> bool {
    matches!(
        c,
        '\\' | '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '^' | '$' | '-' | '/'
    )
}

// ---------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    AndAnd,
    OrOr,
    Not,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Re,
    NRe,
    Desc,
    Tilde,
    Minus,
    Str(String),
    Int(i64),
    Float(f64),
    Dur(u64),
    Word(String),
    Attr(AttrScope, String),
    /// `span:name`, `trace:rootService`: (scope, name).
    Scoped(String, String),
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::AndAnd => "`&&`".into(),
            Tok::OrOr => "`||`".into(),
            Tok::Not => "`!`".into(),
            Tok::Eq => "`=`".into(),
            Tok::Ne => "`!=`".into(),
            Tok::Gt => "`>`".into(),
            Tok::Ge => "`>=`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Le => "`<=`".into(),
            Tok::Re => "`=~`".into(),
            Tok::NRe => "`!~`".into(),
            Tok::Desc => "`>>`".into(),
            Tok::Tilde => "`~`".into(),
            Tok::Minus => "`-`".into(),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Dur(_) => "duration".into(),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Attr(_, k) => format!("attribute `{k}`"),
            Tok::Scoped(s, n) => format!("`{s}:{n}`"),
            Tok::Eof => "end of query".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters that may appear in an unquoted attribute name (as in Tempo:
/// anything but whitespace and operator characters).
fn is_attr_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"' | '`'
        )
}

struct Lexer<'q> {
    q: &'q str,
    i: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.q[self.i..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.q[self.i..].chars().nth(n)
    }

    /// Consumes `n` ASCII characters and returns `t`.
    fn emit(&mut self, n: usize, t: Tok) -> Tok {
        self.i += n;
        t
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn tokens(mut self) -> Result<Vec<Token>> {
        let mut out = Vec::new();
        loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            let pos = self.i;
            let Some(c) = self.peek() else {
                out.push(Token { tok: Tok::Eof, pos });
                return Ok(out);
            };
            let next = self.peek_at(1);
            let tok = match (c, next) {
                ('{', _) => self.emit(1, Tok::LBrace),
                ('}', _) => self.emit(1, Tok::RBrace),
                ('(', _) => self.emit(1, Tok::LParen),
                (')', _) => self.emit(1, Tok::RParen),
                ('&', Some('&')) => self.emit(2, Tok::AndAnd),
                ('&', Some('>' | '<' | '~')) => {
                    return err(
                        pos,
                        "not supported: union structural operators (`&>`, `&>>`, `&<`, `&~` ...)",
                    )
                }
                ('|', Some('|')) => self.emit(2, Tok::OrOr),
                ('|', _) => {
                    return err(
                        pos,
                        "not supported: pipelines (`|`), and with them aggregates, select and by",
                    )
                }
                ('=', Some('~')) => self.emit(2, Tok::Re),
                ('=', Some('=')) => return err(pos, "unexpected `==`; use `=`"),
                ('=', _) => self.emit(1, Tok::Eq),
                ('!', Some('=')) => self.emit(2, Tok::Ne),
                ('!', Some('~')) => self.emit(2, Tok::NRe),
                ('!', Some('>' | '<')) => {
                    return err(pos, "not supported: negated structural operators (`!>`, `!>>`, `!<`, `!<<`)")
                }
                ('!', _) => self.emit(1, Tok::Not),
                ('>', Some('>')) => self.emit(2, Tok::Desc),
                ('>', Some('=')) => self.emit(2, Tok::Ge),
                ('>', _) => self.emit(1, Tok::Gt),
                ('<', Some('<')) => return err(pos, "not supported: ancestor operator `<<`"),
                ('<', Some('=')) => self.emit(2, Tok::Le),
                ('<', _) => self.emit(1, Tok::Lt),
                ('~', _) => self.emit(1, Tok::Tilde),
                ('-', Some(d)) if d.is_ascii_digit() => self.emit(1, Tok::Minus),
                ('+' | '-' | '*' | '/' | '%' | '^', _) => {
                    return err(pos, format!("not supported: arithmetic (`{c}`)"))
                }
                ('"', _) => self.string(pos)?,
                ('`', _) => self.raw_string(pos)?,
                ('.', _) => {
                    self.bump();
                    let key = self.attr_key(pos)?;
                    Tok::Attr(AttrScope::Any, key)
                }
                (c, _) if c.is_ascii_digit() => self.number(pos)?,
                (c, _) if is_ident_start(c) => self.word(pos)?,
                (c, _) => return err(pos, format!("unexpected character {c:?}")),
            };
            out.push(Token { tok, pos });
        }
    }

    fn string(&mut self, pos: usize) -> Result<Tok> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return err(pos, "unterminated string"),
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => {
                    let epos = self.i - 1;
                    match self.bump() {
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        None => return err(pos, "unterminated string"),
                        Some(c) => {
                            return err(
                                epos,
                                format!("invalid escape `\\{c}` in string (a regex escape needs `\\\\{c}`)"),
                            )
                        }
                    }
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn raw_string(&mut self, pos: usize) -> Result<Tok> {
        self.bump();
        let start = self.i;
        match self.q[start..].find('`') {
            Some(n) => {
                self.i = start + n + 1;
                Ok(Tok::Str(self.q[start..start + n].to_string()))
            }
            None => err(pos, "unterminated string"),
        }
    }

    /// An attribute name after its scope's `.`: quoted, or a run of
    /// attribute characters.
    fn attr_key(&mut self, pos: usize) -> Result<String> {
        match self.peek() {
            Some('"') => {
                let spos = self.i;
                match self.string(spos)? {
                    Tok::Str(s) if !s.is_empty() => Ok(s),
                    _ => err(spos, "empty attribute name"),
                }
            }
            Some(c) if is_attr_char(c) => {
                let start = self.i;
                while self.peek().is_some_and(is_attr_char) {
                    self.bump();
                }
                Ok(self.q[start..self.i].to_string())
            }
            _ => err(pos, "expected an attribute name after `.`"),
        }
    }

    fn number(&mut self, pos: usize) -> Result<Tok> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == 'µ' || c == '_') {
            self.bump();
        }
        let text = &self.q[start..self.i];
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return match text.parse::<i64>() {
                Ok(i) => Ok(Tok::Int(i)),
                Err(_) => err(pos, format!("integer {text} out of range")),
            };
        }
        if let Some((a, b)) = text.split_once('.') {
            if !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
            {
                return match text.parse::<f64>() {
                    Ok(f) => Ok(Tok::Float(f)),
                    Err(_) => err(pos, format!("invalid number {text}")),
                };
            }
        }
        parse_duration(text).map(Tok::Dur).map_err(|msg| TraceQlError::Parse { msg, pos })
    }

    fn word(&mut self, pos: usize) -> Result<Tok> {
        let start = self.i;
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        let w = self.q[start..self.i].to_string();
        match self.peek() {
            Some('.') => match w.as_str() {
                "span" | "resource" => {
                    self.bump();
                    let key = self.attr_key(pos)?;
                    let scope = if w == "span" { AttrScope::Span } else { AttrScope::Resource };
                    Ok(Tok::Attr(scope, key))
                }
                "event" | "link" | "instrumentation" | "parent" => {
                    err(pos, format!("not supported: the `{w}.` attribute scope"))
                }
                _ => err(pos, format!("unknown attribute scope `{w}.` (use `span.`, `resource.` or `.`)")),
            },
            Some(':') => match w.as_str() {
                "span" | "trace" => {
                    self.bump();
                    let nstart = self.i;
                    while self.peek().is_some_and(is_ident_char) {
                        self.bump();
                    }
                    if nstart == self.i {
                        return err(pos, format!("expected an intrinsic name after `{w}:`"));
                    }
                    Ok(Tok::Scoped(w, self.q[nstart..self.i].to_string()))
                }
                "event" | "link" | "instrumentation" => {
                    err(pos, format!("not supported: the `{w}:` intrinsic scope"))
                }
                _ => err(pos, format!("unknown intrinsic scope `{w}:` (use `span:` or `trace:`)")),
            },
            _ => Ok(Tok::Word(w)),
        }
    }
}

/// Parses `250ms`, `1.5s`, `1h30m` (units ns, us, µs, ms, s, m, h) into
/// nanoseconds.
fn parse_duration(text: &str) -> std::result::Result<u64, String> {
    let bad = || format!("invalid number or duration {text:?} (durations look like 250ms, 1.5s, 1h30m)");
    let mut total: u128 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let mult: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad()),
            u => return Err(format!("unknown duration unit {u:?} in {text:?} (use ns, us, ms, s, m or h)")),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() || (num.contains('.') && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let int: u128 = int.parse().map_err(|_| bad())?;
        let mut v = int.checked_mul(mult).ok_or_else(bad)?;
        if !frac.is_empty() {
            let frac = &frac[..frac.len().min(18)];
            let f: u128 = frac.parse().map_err(|_| bad())?;
            v += f * mult / 10u128.pow(frac.len() as u32);
        }
        total = total.checked_add(v).ok_or_else(bad)?;
        rest = after;
    }
    u64::try_from(total).map_err(|_| format!("duration {text:?} out of range"))
}

// ---------------------------------------------------------------------------
// Parser

struct Parser {
    toks: Vec<Token>,
    i: usize,
    depth: usize,
    needs_tree: bool,
}

const UNSUPPORTED_WORDS: &[&str] = &[
    "count",
    "avg",
    "min",
    "max",
    "sum",
    "select",
    "by",
    "coalesce",
    "rate",
    "count_over_time",
    "min_over_time",
    "max_over_time",
    "avg_over_time",
    "sum_over_time",
    "quantile_over_time",
    "histogram_over_time",
    "compare",
    "topk",
    "bottomk",
    "with",
    "parent",
    "childCount",
    "nestedSetLeft",
    "nestedSetRight",
    "nestedSetParent",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn pos(&self) -> usize {
        self.toks[self.i].pos
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.i].clone();
        if self.i + 1 < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: &Tok) -> Result<()> {
        if self.eat(t) {
            Ok(())
        } else {
            err(self.pos(), format!("expected {}, found {}", t.describe(), self.peek().describe()))
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(self.pos(), format!("query nested too deeply (more than {MAX_DEPTH} levels)"));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn query(&mut self) -> Result<Spanset> {
        let s = self.ss_or()?;
        if *self.peek() != Tok::Eof {
            return err(self.pos(), format!("unexpected {} after the query", self.peek().describe()));
        }
        Ok(s)
    }

    fn ss_or(&mut self) -> Result<Spanset> {
        let first = self.ss_and()?;
        if *self.peek() != Tok::OrOr {
            return Ok(first);
        }
        let mut v = vec![first];
        while self.eat(&Tok::OrOr) {
            v.push(self.ss_and()?);
        }
        Ok(Spanset::Or(v))
    }

    fn ss_and(&mut self) -> Result<Spanset> {
        let first = self.ss_chain()?;
        if *self.peek() != Tok::AndAnd {
            return Ok(first);
        }
        let mut v = vec![first];
        while self.eat(&Tok::AndAnd) {
            v.push(self.ss_chain()?);
        }
        Ok(Spanset::And(v))
    }

    fn ss_chain(&mut self) -> Result<Spanset> {
        let first = self.ss_primary()?;
        let mut rest = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::Gt => StructOp::Child,
                Tok::Desc => StructOp::Descendant,
                Tok::Tilde => StructOp::Sibling,
                Tok::Lt => return err(self.pos(), "not supported: parent operator `<` between spansets"),
                Tok::NRe => return err(self.pos(), "not supported: not-sibling operator `!~`"),
                t @ (Tok::Ge | Tok::Le | Tok::Eq | Tok::Ne | Tok::Re) => {
                    return err(self.pos(), format!("unexpected {} between spansets", t.describe()))
                }
                _ => break,
            };
            self.bump();
            self.needs_tree = true;
            rest.push((op, self.ss_primary()?));
        }
        if rest.is_empty() {
            Ok(first)
        } else {
            Ok(Spanset::Chain(Box::new(first), rest))
        }
    }

    fn ss_primary(&mut self) -> Result<Spanset> {
        match self.peek() {
            Tok::LBrace => {
                self.enter()?;
                self.bump();
                let e = if *self.peek() == Tok::RBrace {
                    Expr::Lit(Lit::Bool(true))
                } else {
                    let pos = self.pos();
                    let e = self.or()?;
                    let ty = e.ty();
                    if !matches!(ty, Ty::Bool | Ty::Any) {
                        return err(
                            pos,
                            format!("a spanset filter must be a condition, not {}", ty.describe()),
                        );
                    }
                    e
                };
                self.expect(&Tok::RBrace)?;
                self.leave();
                Ok(Spanset::Filter(e))
            }
            Tok::LParen => {
                self.enter()?;
                self.bump();
                let s = self.ss_or()?;
                self.expect(&Tok::RParen)?;
                self.leave();
                Ok(s)
            }
            Tok::Word(w) if UNSUPPORTED_WORDS.contains(&w.as_str()) => {
                err(self.pos(), format!("not supported: `{w}`"))
            }
            t => err(self.pos(), format!("expected `{{` or `(`, found {}", t.describe())),
        }
    }

    fn or(&mut self) -> Result<Expr> {
        let pos = self.pos();
        let first = self.and()?;
        if *self.peek() != Tok::OrOr {
            return Ok(first);
        }
        check_cond(&first, pos, "||")?;
        let mut v = vec![first];
        while self.eat(&Tok::OrOr) {
            let pos = self.pos();
            let e = self.and()?;
            check_cond(&e, pos, "||")?;
            v.push(e);
        }
        Ok(Expr::Or(v))
    }

    fn and(&mut self) -> Result<Expr> {
        let pos = self.pos();
        let first = self.unary()?;
        if *self.peek() != Tok::AndAnd {
            return Ok(first);
        }
        check_cond(&first, pos, "&&")?;
        let mut v = vec![first];
        while self.eat(&Tok::AndAnd) {
            let pos = self.pos();
            let e = self.unary()?;
            check_cond(&e, pos, "&&")?;
            v.push(e);
        }
        Ok(Expr::And(v))
    }

    fn unary(&mut self) -> Result<Expr> {
        if *self.peek() == Tok::Not {
            self.enter()?;
            self.bump();
            let pos = self.pos();
            let e = self.unary()?;
            check_cond(&e, pos, "!")?;
            self.leave();
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr> {
        let lpos = self.pos();
        let lhs = self.operand()?;
        let op_pos = self.pos();
        let op = match self.peek() {
            Tok::Eq => CmpOp::Eq,
            Tok::Ne => CmpOp::Ne,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Re | Tok::NRe => {
                let negated = *self.peek() == Tok::NRe;
                self.bump();
                let ty = lhs.ty();
                if !matches!(ty, Ty::Str | Ty::Any) {
                    return err(
                        lpos,
                        format!("`=~` and `!~` need a string on the left, not {}", ty.describe()),
                    );
                }
                let t = self.bump();
                let Tok::Str(p) = t.tok else {
                    return err(t.pos, "a regex must be a string literal");
                };
                let glob = Glob::compile(&p, t.pos)?;
                return self.no_chain(Expr::Match { lhs: Box::new(lhs), negated, glob });
            }
            _ => return Ok(lhs),
        };
        self.bump();
        let rpos = self.pos();
        let rhs = self.operand()?;
        let (lt, rt) = (lhs.ty(), rhs.ty());
        if lt == Ty::Nil || rt == Ty::Nil {
            let other = if lt == Ty::Nil { rt } else { lt };
            if op.is_ordering() || other != Ty::Any {
                return err(op_pos, "nil can only be compared to an attribute, with = or !=");
            }
        } else if lt != Ty::Any && rt != Ty::Any && lt != rt {
            return err(rpos, format!("cannot compare {} with {}", lt.describe(), rt.describe()));
        }
        if op.is_ordering() {
            for t in [lt, rt] {
                if matches!(t, Ty::Bool | Ty::Status | Ty::Kind) {
                    return err(op_pos, format!("`{}` does not apply to {}", op.symbol(), t.describe()));
                }
            }
        }
        self.no_chain(Expr::Cmp(Box::new(lhs), op, Box::new(rhs)))
    }

    fn no_chain(&self, e: Expr) -> Result<Expr> {
        if matches!(
            self.peek(),
            Tok::Eq | Tok::Ne | Tok::Gt | Tok::Ge | Tok::Lt | Tok::Le | Tok::Re | Tok::NRe
        ) {
            return err(self.pos(), "comparisons cannot be chained; use parentheses");
        }
        Ok(e)
    }

    fn operand(&mut self) -> Result<Expr> {
        let t = self.bump();
        let pos = t.pos;
        Ok(match t.tok {
            Tok::LParen => {
                self.enter()?;
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                self.leave();
                e
            }
            Tok::Str(s) => Expr::Lit(Lit::Str(s)),
            Tok::Int(i) => Expr::Lit(Lit::Int(i)),
            Tok::Float(f) => Expr::Lit(Lit::Float(f)),
            Tok::Dur(d) => Expr::Lit(Lit::Dur(d)),
            Tok::Minus => match self.bump().tok {
                Tok::Int(i) => Expr::Lit(Lit::Int(-i)),
                Tok::Float(f) => Expr::Lit(Lit::Float(-f)),
                _ => return err(pos, "`-` must precede a number"),
            },
            Tok::Attr(scope, key) => Expr::Attr(scope, key),
            Tok::Scoped(scope, name) => {
                let i = match (scope.as_str(), name.as_str()) {
                    ("span", "name") => Intrinsic::Name,
                    ("span", "status") => Intrinsic::Status,
                    ("span", "kind") => Intrinsic::Kind,
                    ("span", "duration") => Intrinsic::Duration,
                    ("span", "statusMessage") => Intrinsic::StatusMessage,
                    ("trace", "rootService") => Intrinsic::RootService,
                    ("trace", "rootName") => Intrinsic::RootName,
                    ("trace", "duration") => Intrinsic::TraceDuration,
                    ("span", "id" | "parentID" | "childCount") | ("trace", "id") => {
                        return err(pos, format!("not supported: intrinsic `{scope}:{name}`"))
                    }
                    _ => return err(pos, format!("unknown intrinsic `{scope}:{name}`")),
                };
                Expr::Intr(i)
            }
            Tok::Word(w) => match w.as_str() {
                "true" => Expr::Lit(Lit::Bool(true)),
                "false" => Expr::Lit(Lit::Bool(false)),
                "nil" => Expr::Lit(Lit::Nil),
                "error" => Expr::Lit(Lit::Status(status::ERROR)),
                "ok" => Expr::Lit(Lit::Status(status::OK)),
                "unset" => Expr::Lit(Lit::Status(status::UNSET)),
                "server" => Expr::Lit(Lit::Kind(kind::SERVER)),
                "client" => Expr::Lit(Lit::Kind(kind::CLIENT)),
                "internal" => Expr::Lit(Lit::Kind(kind::INTERNAL)),
                "producer" => Expr::Lit(Lit::Kind(kind::PRODUCER)),
                "consumer" => Expr::Lit(Lit::Kind(kind::CONSUMER)),
                "unspecified" => Expr::Lit(Lit::Kind(kind::UNSPECIFIED)),
                "name" => Expr::Intr(Intrinsic::Name),
                "status" => Expr::Intr(Intrinsic::Status),
                "kind" => Expr::Intr(Intrinsic::Kind),
                "duration" => Expr::Intr(Intrinsic::Duration),
                "statusMessage" => Expr::Intr(Intrinsic::StatusMessage),
                "rootServiceName" => Expr::Intr(Intrinsic::RootService),
                "rootName" => Expr::Intr(Intrinsic::RootName),
                "traceDuration" => Expr::Intr(Intrinsic::TraceDuration),
                w if UNSUPPORTED_WORDS.contains(&w) => return err(pos, format!("not supported: `{w}`")),
                w => {
                    return err(
                        pos,
                        format!(
                            "unknown intrinsic `{w}` (an attribute needs a scope: `.{w}`, `span.{w}` or \
                             `resource.{w}`)"
                        ),
                    )
                }
            },
            t => {
                return err(
                    pos,
                    format!("expected a value, an attribute or an intrinsic, found {}", t.describe()),
                )
            }
        })
    }
}

fn check_cond(e: &Expr, pos: usize, op: &str) -> Result<()> {
    let ty = e.ty();
    if matches!(ty, Ty::Bool | Ty::Any) {
        Ok(())
    } else {
        err(pos, format!("`{op}` needs conditions, not {}", ty.describe()))
    }
}

// ---------------------------------------------------------------------------
// Evaluation

/// A value during evaluation. `Missing` is an absent attribute (or a trace
/// without a root for the root intrinsics); `Opaque` is a present value that
/// compares with nothing (bytes, arrays, maps, empty).
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Missing,
    Opaque,
    Str(&'a str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Dur(u64),
    Status(u8),
    Kind(u8),
}

impl<'a> Val<'a> {
    fn of_attr(v: &'a AttrValue) -> Val<'a> {
        match v {
            AttrValue::Str(s) => Val::Str(s),
            AttrValue::Int(i) => Val::Int(*i),
            AttrValue::Double(d) => Val::Float(*d),
            AttrValue::Bool(b) => Val::Bool(*b),
            _ => Val::Opaque,
        }
    }

    fn of_lit(l: &'a Lit) -> Val<'a> {
        match l {
            Lit::Str(s) => Val::Str(s),
            Lit::Int(i) => Val::Int(*i),
            Lit::Float(f) => Val::Float(*f),
            Lit::Bool(b) => Val::Bool(*b),
            Lit::Dur(d) => Val::Dur(*d),
            Lit::Status(s) => Val::Status(*s),
            Lit::Kind(k) => Val::Kind(*k),
            Lit::Nil => Val::Missing,
        }
    }

    fn truthy(self) -> bool {
        matches!(self, Val::Bool(true))
    }
}

/// Orders an integer against a float exactly (no rounding of large ints).
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    // [-2^63, 2^63) holds every float that converts to i64 exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f >= LIMIT {
        return Some(Ordering::Less);
    }
    if f < -LIMIT {
        return Some(Ordering::Greater);
    }
    let t = f.trunc() as i64;
    match i.cmp(&t) {
        Ordering::Equal if f.fract() > 0.0 => Some(Ordering::Less),
        Ordering::Equal if f.fract() < 0.0 => Some(Ordering::Greater),
        o => Some(o),
    }
}

fn compare(op: CmpOp, a: Val<'_>, b: Val<'_>) -> bool {
    let ord = match (a, b) {
        (Val::Bool(x), Val::Bool(y)) => x.cmp(&y),
        (Val::Status(x), Val::Status(y)) | (Val::Kind(x), Val::Kind(y)) => x.cmp(&y),
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Int(x), Val::Int(y)) => x.cmp(&y),
        (Val::Dur(x), Val::Dur(y)) => x.cmp(&y),
        (Val::Float(x), Val::Float(y)) => match x.partial_cmp(&y) {
            Some(o) => o,
            None => return false,
        },
        (Val::Int(x), Val::Float(y)) => match cmp_int_float(x, y) {
            Some(o) => o,
            None => return false,
        },
        (Val::Float(x), Val::Int(y)) => match cmp_int_float(y, x) {
            Some(o) => o.reverse(),
            None => return false,
        },
        _ => return false,
    };
    if op.is_ordering() && matches!(a, Val::Bool(_) | Val::Status(_) | Val::Kind(_)) {
        return false;
    }
    op.test(ord)
}

/// Per-trace facts the trace-level intrinsics and structural operators need.
struct TraceCtx<'a> {
    root: Option<&'a Span>,
    duration: u64,
    /// Index of each span's parent within the trace.
    parent: Vec<Option<usize>>,
}

impl<'a> TraceCtx<'a> {
    fn new(spans: &'a [Span], needs_tree: bool) -> TraceCtx<'a> {
        let root = spans.iter().find(|s| s.parent_span_id.is_none_or(|p| p.is_zero()));
        let start = spans.iter().map(|s| s.start_time_unix_nano).min().unwrap_or(0);
        let end = spans.iter().map(|s| s.end_time_unix_nano).max().unwrap_or(0);
        let mut parent = Vec::new();
        if needs_tree {
            let mut index: HashMap<SpanId, usize> = HashMap::with_capacity(spans.len());
            for (i, s) in spans.iter().enumerate() {
                index.entry(s.span_id).or_insert(i);
            }
            parent = spans
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let p = s.parent_span_id.filter(|p| !p.is_zero())?;
                    index.get(&p).copied().filter(|&j| j != i)
                })
                .collect();
        }
        TraceCtx { root, duration: end.saturating_sub(start), parent }
    }
}

fn lookup<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<Val<'a>> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| Val::of_attr(v))
}

fn resource_attr<'a>(s: &'a Span, key: &str) -> Option<Val<'a>> {
    if key == "service.name" {
        return Some(Val::Str(s.service_name()));
    }
    lookup(&s.resource.attributes, key)
}

fn eval<'a>(e: &'a Expr, s: &'a Span, ctx: &TraceCtx<'a>) -> Val<'a> {
    match e {
        Expr::Lit(l) => Val::of_lit(l),
        Expr::Attr(scope, key) => {
            let v = match scope {
                AttrScope::Span => lookup(&s.attributes, key),
                AttrScope::Resource => resource_attr(s, key),
                AttrScope::Any => lookup(&s.attributes, key).or_else(|| resource_attr(s, key)),
            };
            v.unwrap_or(Val::Missing)
        }
        Expr::Intr(i) => match i {
            Intrinsic::Name => Val::Str(&s.name),
            Intrinsic::Status => Val::Status(s.status_code),
            Intrinsic::Kind => Val::Kind(s.kind),
            Intrinsic::Duration => Val::Dur(s.duration_ns()),
            Intrinsic::StatusMessage => Val::Str(&s.status_message),
            Intrinsic::RootService => ctx.root.map_or(Val::Missing, |r| Val::Str(r.service_name())),
            Intrinsic::RootName => ctx.root.map_or(Val::Missing, |r| Val::Str(&r.name)),
            Intrinsic::TraceDuration => Val::Dur(ctx.duration),
        },
        Expr::Not(e) => match eval(e, s, ctx) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Missing,
        },
        Expr::And(v) => Val::Bool(v.iter().all(|e| eval(e, s, ctx).truthy())),
        Expr::Or(v) => Val::Bool(v.iter().any(|e| eval(e, s, ctx).truthy())),
        Expr::Cmp(l, op, r) => {
            let (a, b) = (eval(l, s, ctx), eval(r, s, ctx));
            if matches!(**l, Expr::Lit(Lit::Nil)) || matches!(**r, Expr::Lit(Lit::Nil)) {
                let other = if matches!(**l, Expr::Lit(Lit::Nil)) { b } else { a };
                let present = !matches!(other, Val::Missing);
                return Val::Bool(if *op == CmpOp::Eq { !present } else { present });
            }
            Val::Bool(compare(*op, a, b))
        }
        Expr::Match { lhs, negated, glob } => match eval(lhs, s, ctx) {
            Val::Str(x) => Val::Bool(glob.matches(x) != *negated),
            _ => Val::Bool(false),
        },
    }
}

fn eval_spanset(ss: &Spanset, spans: &[Span], ctx: &TraceCtx<'_>) -> Vec<bool> {
    match ss {
        Spanset::Filter(e) => spans.iter().map(|s| eval(e, s, ctx).truthy()).collect(),
        Spanset::And(v) => {
            let mut out = vec![false; spans.len()];
            for s in v {
                let r = eval_spanset(s, spans, ctx);
                if !r.iter().any(|&b| b) {
                    return vec![false; spans.len()];
                }
                out.iter_mut().zip(r).for_each(|(o, b)| *o |= b);
            }
            out
        }
        Spanset::Or(v) => {
            let mut out = vec![false; spans.len()];
            for s in v {
                let r = eval_spanset(s, spans, ctx);
                out.iter_mut().zip(r).for_each(|(o, b)| *o |= b);
            }
            out
        }
        Spanset::Chain(first, rest) => {
            let mut cur = eval_spanset(first, spans, ctx);
            for (op, rhs) in rest {
                if !cur.iter().any(|&b| b) {
                    return cur;
                }
                let r = eval_spanset(rhs, spans, ctx);
                cur = relate(*op, &cur, &r, &ctx.parent);
            }
            cur
        }
    }
}

/// The spans of `right` that stand in relation `op` to some span of `left`.
fn relate(op: StructOp, left: &[bool], right: &[bool], parent: &[Option<usize>]) -> Vec<bool> {
    let n = right.len();
    match op {
        StructOp::Child => (0..n).map(|i| right[i] && parent[i].is_some_and(|p| left[p])).collect(),
        StructOp::Sibling => {
            let mut left_children = vec![0usize; n];
            for i in 0..n {
                if let (true, Some(p)) = (left[i], parent[i]) {
                    left_children[p] += 1;
                }
            }
            (0..n)
                .map(|i| right[i] && parent[i].is_some_and(|p| left_children[p] > usize::from(left[i])))
                .collect()
        }
        StructOp::Descendant => {
            // has_anc[i]: some proper ancestor of i is in `left`. Computed
            // iteratively with memoization, safe against parent cycles.
            let mut memo: Vec<Option<bool>> = vec![None; n];
            let mut on_path = vec![false; n];
            let mut path = Vec::new();
            for i in 0..n {
                if memo[i].is_some() {
                    continue;
                }
                path.clear();
                let mut j = i;
                let mut v = loop {
                    path.push(j);
                    on_path[j] = true;
                    match parent[j] {
                        None => break false,
                        Some(p) if left[p] => break true,
                        Some(p) => {
                            if let Some(m) = memo[p] {
                                break m;
                            }
                            if on_path[p] {
                                break false;
                            }
                            j = p;
                        }
                    }
                };
                for &k in path.iter().rev() {
                    memo[k] = Some(v);
                    on_path[k] = false;
                    v = v || left[k];
                }
            }
            (0..n).map(|i| right[i] && memo[i] == Some(true)).collect()
        }
    }
}

// ---------------------------------------------------------------------------
// Candidate filter

fn flatten_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::And(v) => v.iter().for_each(|e| flatten_and(e, out)),
        e => out.push(e),
    }
}

fn filter_score(f: &SpanFilter) -> usize {
    usize::from(f.service.is_some())
        + usize::from(f.operation.is_some())
        + f.attrs.len()
        + usize::from(f.min_duration_ns.is_some())
        + usize::from(f.max_duration_ns.is_some())
        + usize::from(f.status.is_some())
}

fn filter_of_expr(e: &Expr) -> SpanFilter {
    let mut f = SpanFilter::default();
    let mut conj = Vec::new();
    flatten_and(e, &mut conj);
    for c in conj {
        let Expr::Cmp(l, op, r) = c else { continue };
        let (field, op, lit) = match (&**l, &**r) {
            (Expr::Lit(lit), field) if !matches!(field, Expr::Lit(_)) => (field, op.flip(), lit),
            (field, Expr::Lit(lit)) => (field, *op, lit),
            _ => continue,
        };
        match (field, op, lit) {
            (Expr::Attr(AttrScope::Resource, k), CmpOp::Eq, Lit::Str(v)) if k == "service.name" => {
                f.service.get_or_insert_with(|| v.clone());
            }
            // Unscoped `.service.name` may be a span attribute or the
            // service: no single filter field covers both.
            (Expr::Attr(AttrScope::Any, k), _, _) if k == "service.name" => {}
            (Expr::Attr(_, k), CmpOp::Eq, Lit::Str(v)) => f.attrs.push((k.clone(), v.clone())),
            (Expr::Attr(_, k), CmpOp::Eq, Lit::Int(v)) => f.attrs.push((k.clone(), v.to_string())),
            (Expr::Attr(_, k), CmpOp::Eq, Lit::Bool(v)) => f.attrs.push((k.clone(), v.to_string())),
            (Expr::Intr(Intrinsic::Name), CmpOp::Eq, Lit::Str(v)) => {
                f.operation.get_or_insert_with(|| v.clone());
            }
            (Expr::Intr(Intrinsic::Duration), op, Lit::Dur(d)) => {
                let (min, max) = match op {
                    CmpOp::Gt => (Some(d.saturating_add(1)), None),
                    CmpOp::Ge => (Some(*d), None),
                    CmpOp::Lt | CmpOp::Le => (None, Some(*d)),
                    CmpOp::Eq => (Some(*d), Some(*d)),
                    CmpOp::Ne => (None, None),
                };
                if let Some(m) = min {
                    f.min_duration_ns = Some(f.min_duration_ns.map_or(m, |x| x.max(m)));
                }
                if let Some(m) = max {
                    f.max_duration_ns = Some(f.max_duration_ns.map_or(m, |x| x.min(m)));
                }
            }
            (Expr::Intr(Intrinsic::Status), CmpOp::Eq, Lit::Status(status::ERROR)) => {
                f.status.get_or_insert(StatusFilter::Error);
            }
            (Expr::Intr(Intrinsic::Status), CmpOp::Eq, Lit::Status(_))
            | (Expr::Intr(Intrinsic::Status), CmpOp::Ne, Lit::Status(status::ERROR)) => {
                f.status.get_or_insert(StatusFilter::Ok);
            }
            _ => {}
        }
    }
    f
}

fn filter_of_spanset(ss: &Spanset) -> SpanFilter {
    let best = |v: &mut dyn Iterator<Item = &Spanset>| {
        v.map(filter_of_spanset).max_by_key(filter_score).unwrap_or_default()
    };
    match ss {
        Spanset::Filter(e) => filter_of_expr(e),
        Spanset::Or(_) => SpanFilter::default(),
        Spanset::And(v) => best(&mut v.iter()),
        Spanset::Chain(first, rest) => {
            best(&mut std::iter::once(&**first).chain(rest.iter().map(|(_, s)| s)))
        }
    }
}

/// Appends to `out` a filter per part of `ss` that every matching trace
/// has a span meeting: every spanset of a chain or of `&&` must select a
/// span for the whole to, while `||` needs only one side.
fn required_of_spanset(ss: &Spanset, out: &mut Vec<SpanFilter>) {
    match ss {
        Spanset::Filter(e) => {
            let f = filter_of_expr(e);
            if filter_score(&f) > 0 {
                out.push(f);
            }
        }
        Spanset::Or(_) => {}
        Spanset::And(v) => v.iter().for_each(|s| required_of_spanset(s, out)),
        Spanset::Chain(first, rest) => {
            required_of_spanset(first, out);
            rest.iter().for_each(|(_, s)| required_of_spanset(s, out));
        }
    }
}

// ---------------------------------------------------------------------------
// Public API

impl TraceQl {
    /// Parses a query. Errors carry the byte offset of the problem.
    pub fn parse(q: &str) -> Result<TraceQl> {
        let toks = Lexer { q, i: 0 }.tokens()?;
        let mut p = Parser { toks, i: 0, depth: 0, needs_tree: false };
        let root = p.query()?;
        Ok(TraceQl { root, needs_tree: p.needs_tree })
    }

    /// The spans of `spans` (one whole trace) that the query selects, in
    /// their order in `spans`; empty = the trace does not match.
    pub fn matching_spans<'a>(&self, spans: &'a [Span]) -> Vec<&'a Span> {
        if spans.is_empty() {
            return Vec::new();
        }
        let ctx = TraceCtx::new(spans, self.needs_tree);
        let sel = eval_spanset(&self.root, spans, &ctx);
        spans.iter().zip(sel).filter(|(_, b)| *b).map(|(s, _)| s).collect()
    }

    /// Conditions every matching trace meets on at least one span, to pick
    /// candidate traces from an index: a superset of the matches, never a
    /// subset. `SpanFilter::default()` when nothing can be pruned.
    pub fn candidate_filter(&self) -> SpanFilter {
        filter_of_spanset(&self.root)
    }

    /// Filters each of which every matching trace meets on at least one of
    /// its spans (one per spanset of a structural chain or `&&`, e.g. both
    /// sides of `{A} >> {B}`): a trace without a span meeting one of them
    /// cannot match, so it need not be read. Empty when nothing prunes.
    pub fn required_filters(&self) -> Vec<SpanFilter> {
        let mut out = Vec::new();
        required_of_spanset(&self.root, &mut out);
        out
    }
}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use skein_storage::model::{Resource, Scope, TraceId};

    use super::*;

    fn parse_err(q: &str) -> (String, usize) {
        match TraceQl::parse(q) {
            Ok(_) => panic!("{q:?} parsed"),
            Err(TraceQlError::Parse { msg, pos }) => (msg, pos),
        }
    }

    fn res(svc: &str, attrs: Vec<(&str, AttrValue)>) -> Arc<Resource> {
        let mut attributes: Vec<(String, AttrValue)> =
            vec![("service.name".into(), AttrValue::Str(svc.into()))];
        attributes.extend(attrs.into_iter().map(|(k, v)| (k.to_string(), v)));
        Arc::new(Resource { service_name: svc.into(), attributes })
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        id: u8,
        parent: Option<u8>,
        name: &str,
        kind: u8,
        status_code: u8,
        start_ms: u64,
        end_ms: u64,
        resource: &Arc<Resource>,
        attrs: Vec<(&str, AttrValue)>,
    ) -> Span {
        Span {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([id; 8]),
            parent_span_id: parent.map(|p| SpanId([p; 8])),
            trace_state: String::new(),
            flags: 0,
            name: name.into(),
            kind,
            start_time_unix_nano: start_ms * 1_000_000,
            end_time_unix_nano: end_ms * 1_000_000,
            status_code,
            status_message: if status_code == status::ERROR {
                "timeout after 5s".into()
            } else {
                String::new()
            },
            attributes: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            events: Vec::new(),
            links: Vec::new(),
            resource: resource.clone(),
            scope: Arc::new(Scope::default()),
        }
    }

    /// 1 GET /api (frontend, server)
    /// ├── 2 auth (frontend, client, ok)
    /// └── 3 db.query (backend, client, error)
    ///     └── 4 SELECT users (backend, internal)
    ///         └── 5 cache (cache, producer)
    fn trace() -> Vec<Span> {
        let fe = res("frontend", vec![("deployment.env", AttrValue::Str("prod".into()))]);
        let be = res("backend", vec![("host.cores", AttrValue::Int(8))]);
        let cache = res("cache", vec![]);
        vec![
            span(
                1,
                None,
                "GET /api",
                kind::SERVER,
                status::UNSET,
                0,
                1000,
                &fe,
                vec![
                    ("http.method", AttrValue::Str("GET".into())),
                    ("http.response.status_code", AttrValue::Int(200)),
                ],
            ),
            span(
                2,
                Some(1),
                "auth",
                kind::CLIENT,
                status::OK,
                10,
                60,
                &fe,
                vec![("retry.factor", AttrValue::Double(1.5)), ("count", AttrValue::Double(3.0))],
            ),
            span(
                3,
                Some(1),
                "db.query",
                kind::CLIENT,
                status::ERROR,
                100,
                900,
                &be,
                vec![
                    ("db.rows", AttrValue::Int(10)),
                    ("deployment.env", AttrValue::Str("span-level".into())),
                ],
            ),
            span(
                4,
                Some(3),
                "SELECT users",
                kind::INTERNAL,
                status::UNSET,
                150,
                850,
                &be,
                vec![
                    ("a b", AttrValue::Str("x".into())),
                    ("flag", AttrValue::Bool(true)),
                    ("blob", AttrValue::Bytes(vec![1])),
                ],
            ),
            span(
                5,
                Some(4),
                "cache",
                kind::PRODUCER,
                status::UNSET,
                200,
                1200,
                &cache,
                vec![("code", AttrValue::Str("200".into())), ("flag", AttrValue::Bool(false))],
            ),
        ]
    }

    /// The ids (1..=5) of the spans `q` selects in the test trace.
    fn ids(q: &str) -> Vec<u8> {
        let t = trace();
        let q = TraceQl::parse(q).unwrap_or_else(|e| panic!("{q:?}: {e}"));
        q.matching_spans(&t).iter().map(|s| s.span_id.0[0]).collect()
    }

    #[test]
    fn empty_and_true_match_everything() {
        assert_eq!(ids("{}"), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids("{ true }"), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids("  {  }  "), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids("{ false }"), Vec::<u8>::new());
        assert!(TraceQl::parse("{}").unwrap().matching_spans(&[]).is_empty());
    }

    #[test]
    fn comparison_operators() {
        assert_eq!(ids(r#"{ name = "auth" }"#), vec![2]);
        assert_eq!(ids(r#"{ name != "auth" }"#), vec![1, 3, 4, 5]);
        assert_eq!(ids(r#"{ name > "db" }"#), vec![3]);
        assert_eq!(ids(r#"{ name >= "cache" }"#), vec![3, 5]);
        assert_eq!(ids(r#"{ name < "auth" }"#), vec![1, 4]);
        assert_eq!(ids(r#"{ name <= "auth" }"#), vec![1, 2, 4]);
        assert_eq!(ids(r#"{ .db.rows > 9 }"#), vec![3]);
        assert_eq!(ids(r#"{ .db.rows >= 10 }"#), vec![3]);
        assert_eq!(ids(r#"{ .db.rows < 10 }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ .db.rows <= 10 }"#), vec![3]);
        assert_eq!(ids(r#"{ name =~ "GET .*" }"#), vec![1]);
        assert_eq!(ids(r#"{ name !~ ".*e.*" }"#), vec![1, 2]);
        assert_eq!(ids(r#"{ statusMessage =~ ".*timeout.*" }"#), vec![3]);
        assert_eq!(ids(r#"{ name =~ "db\\.query" }"#), vec![3]);
        assert_eq!(ids(r#"{ name =~ "^a.*h$" }"#), vec![2]);
        assert_eq!(ids(r#"{ name =~ "GET" }"#), Vec::<u8>::new(), "anchored");
        // Literal on the left.
        assert_eq!(ids(r#"{ "auth" = name }"#), vec![2]);
        assert_eq!(ids(r#"{ 9 < .db.rows }"#), vec![3]);
    }

    #[test]
    fn logical_operators_and_precedence() {
        assert_eq!(ids(r#"{ kind = client && status = error }"#), vec![3]);
        assert_eq!(ids(r#"{ name = "auth" || name = "cache" }"#), vec![2, 5]);
        assert_eq!(ids(r#"{ !(name = "auth") }"#), vec![1, 3, 4, 5]);
        assert_eq!(ids(r#"{ !name = "auth" }"#), vec![1, 3, 4, 5]);
        assert_eq!(ids(r#"{ !!(name = "auth") }"#), vec![2]);
        // && binds tighter than ||.
        assert_eq!(ids(r#"{ name = "auth" || name = "cache" && kind = server }"#), vec![2]);
        assert_eq!(ids(r#"{ (name = "auth" || name = "cache") && kind = producer }"#), vec![5]);
        // Bare boolean attributes.
        assert_eq!(ids("{ .flag }"), vec![4]);
        assert_eq!(ids("{ !.flag }"), vec![5]);
        assert_eq!(ids("{ .flag && true }"), vec![4]);
        assert_eq!(ids("{ .flag = false }"), vec![5]);
    }

    #[test]
    fn intrinsics() {
        assert_eq!(ids("{ status = error }"), vec![3]);
        assert_eq!(ids("{ status = ok }"), vec![2]);
        assert_eq!(ids("{ status = unset }"), vec![1, 4, 5]);
        assert_eq!(ids("{ status != unset }"), vec![2, 3]);
        assert_eq!(ids("{ span:status = error }"), vec![3]);
        assert_eq!(ids("{ kind = server }"), vec![1]);
        assert_eq!(ids("{ kind = client }"), vec![2, 3]);
        assert_eq!(ids("{ kind = internal }"), vec![4]);
        assert_eq!(ids("{ kind = producer }"), vec![5]);
        assert_eq!(ids("{ kind = consumer }"), Vec::<u8>::new());
        assert_eq!(ids("{ kind = unspecified }"), Vec::<u8>::new());
        assert_eq!(ids("{ span:kind = server }"), vec![1]);
        assert_eq!(ids("{ duration > 800ms }"), vec![1, 5]);
        assert_eq!(ids("{ duration >= 1s }"), vec![1, 5]);
        assert_eq!(ids("{ span:duration < 0.1s }"), vec![2]);
        assert_eq!(ids("{ duration = 50000us }"), vec![2]);
        assert_eq!(ids("{ duration <= 50000000ns }"), vec![2]);
        assert_eq!(ids("{ duration > 1m }"), Vec::<u8>::new());
        assert_eq!(ids("{ duration < 1h }"), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids(r#"{ span:name = "cache" }"#), vec![5]);
        assert_eq!(ids(r#"{ statusMessage = "timeout after 5s" }"#), vec![3]);
        assert_eq!(ids(r#"{ span:statusMessage != "" }"#), vec![3]);
        assert_eq!(ids(r#"{ trace:rootService = "frontend" && kind = producer }"#), vec![5]);
        assert_eq!(ids(r#"{ trace:rootService = "backend" }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ trace:rootName = "GET /api" && name = "auth" }"#), vec![2]);
        assert_eq!(
            ids(r#"{ rootName = "GET /api" && rootServiceName = "frontend" && name = "auth" }"#),
            vec![2]
        );
        // Trace duration is 0..1200ms even though the root lasts 1000ms.
        assert_eq!(ids("{ trace:duration = 1.2s && kind = server }"), vec![1]);
        assert_eq!(ids("{ traceDuration > 1s && kind = server }"), vec![1]);
        assert_eq!(ids("{ trace:duration > 2s }"), Vec::<u8>::new());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("900us"), Ok(900_000));
        assert_eq!(parse_duration("900µs"), Ok(900_000));
        assert_eq!(parse_duration("100ns"), Ok(100));
        assert_eq!(parse_duration("2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("1.s").is_err());
        assert!(parse_duration("99999999999h").is_err());
        let (msg, pos) = parse_err("{ duration > 5x }");
        assert!(msg.contains("duration"), "{msg}");
        assert_eq!(pos, 13);
    }

    #[test]
    fn attribute_typing() {
        // Int attribute compared with int and float.
        assert_eq!(ids("{ span.http.response.status_code = 200 }"), vec![1]);
        assert_eq!(ids("{ span.http.response.status_code = 200.0 }"), vec![1]);
        assert_eq!(ids("{ span.http.response.status_code < 200.5 }"), vec![1]);
        assert_eq!(ids("{ span.http.response.status_code > 199.5 }"), vec![1]);
        // Float attribute compared with int and float.
        assert_eq!(ids("{ .retry.factor > 1 }"), vec![2]);
        assert_eq!(ids("{ .retry.factor = 1.5 }"), vec![2]);
        assert_eq!(ids("{ .count = 3 }"), vec![2]);
        assert_eq!(ids("{ .count != 3 }"), Vec::<u8>::new());
        // A string attribute never equals a number, and vice versa.
        assert_eq!(ids("{ .code = 200 }"), Vec::<u8>::new());
        assert_eq!(ids(r#"{ .code = "200" }"#), vec![5]);
        assert_eq!(ids(r#"{ .http.response.status_code = "200" }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ .http.response.status_code != "200" }"#), Vec::<u8>::new());
        // Missing attribute: every comparison is false, even !=.
        assert_eq!(ids(r#"{ .nope != "x" }"#), Vec::<u8>::new());
        assert_eq!(ids("{ .nope = nil }"), vec![1, 2, 3, 4, 5]);
        assert_eq!(ids("{ .flag != nil }"), vec![4, 5]);
        // Opaque values exist but compare with nothing.
        assert_eq!(ids("{ .blob != nil }"), vec![4]);
        assert_eq!(ids(r#"{ .blob != "x" }"#), Vec::<u8>::new());
        // Negative numbers.
        assert_eq!(ids("{ .db.rows > -1 }"), vec![3]);
        assert_eq!(ids("{ .retry.factor > -1.5 }"), vec![2]);
        // Exact int/float comparison for large values.
        assert_eq!(cmp_int_float(i64::MAX, 9_223_372_036_854_775_808.0), Some(Ordering::Less));
        assert_eq!(cmp_int_float((1 << 60) + 1, (1u64 << 60) as f64), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(-3, -2.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-2, -2.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(1, f64::NAN), None);
    }

    #[test]
    fn attribute_scopes_and_keys() {
        assert_eq!(ids(r#"{ resource.service.name = "backend" }"#), vec![3, 4]);
        assert_eq!(ids(r#"{ .service.name = "cache" }"#), vec![5]);
        assert_eq!(ids(r#"{ span.service.name = "cache" }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ resource.deployment.env = "prod" }"#), vec![1, 2]);
        // Unscoped: span first, then resource.
        assert_eq!(ids(r#"{ .deployment.env = "prod" }"#), vec![1, 2]);
        assert_eq!(ids(r#"{ .deployment.env = "span-level" }"#), vec![3]);
        assert_eq!(ids(r#"{ span.deployment.env = "prod" }"#), Vec::<u8>::new());
        assert_eq!(ids("{ resource.host.cores = 8 }"), vec![3, 4]);
        assert_eq!(ids(r#"{ span."a b" = "x" }"#), vec![4]);
        assert_eq!(ids(r#"{ ."a b" = "x" }"#), vec![4]);
        assert_eq!(ids(r#"{.http.method="GET"}"#), vec![1]);
        assert_eq!(ids(r#"{ span.http.method = `GET` }"#), vec![1]);
    }

    #[test]
    fn string_escapes() {
        let t = trace();
        let mut s = t[0].clone();
        s.attributes = vec![("q".into(), AttrValue::Str(r#"say "hi" \ bye"#.into()))];
        let q = TraceQl::parse(r#"{ .q = "say \"hi\" \\ bye" }"#).unwrap();
        assert_eq!(q.matching_spans(std::slice::from_ref(&s)).len(), 1);
        let q = TraceQl::parse(r#"{ .q =~ ".*\"hi\".*" }"#).unwrap();
        assert_eq!(q.matching_spans(std::slice::from_ref(&s)).len(), 1);
    }

    #[test]
    fn structural_operators() {
        let root = r#"{ name = "GET /api" }"#;
        assert_eq!(ids(&format!("{root} > {{ kind = client }}")), vec![2, 3]);
        assert_eq!(ids(&format!("{root} > {{}}")), vec![2, 3]);
        assert_eq!(ids(&format!("{root} >> {{}}")), vec![2, 3, 4, 5]);
        assert_eq!(ids(&format!(r#"{root} > {{ name = "SELECT users" }}"#)), Vec::<u8>::new());
        assert_eq!(ids(&format!(r#"{root} >> {{ name = "SELECT users" }}"#)), vec![4]);
        assert_eq!(ids(r#"{ kind = client } >> { kind = producer }"#), vec![5]);
        assert_eq!(ids(r#"{ kind = producer } >> {}"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ name = "auth" } ~ {}"#), vec![3]);
        assert_eq!(ids(r#"{ kind = client } ~ { kind = client }"#), vec![2, 3]);
        assert_eq!(ids(r#"{ name = "auth" } ~ { name = "auth" }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ name = "cache" } ~ {}"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{} ~ { name = "GET /api" }"#), Vec::<u8>::new());
        // Chains are left-associative.
        assert_eq!(ids(&format!("{root} > {{}} > {{}}")), vec![4]);
        assert_eq!(ids(&format!("{root} > {{}} >> {{}}")), vec![4, 5]);
        // Logical spanset operators.
        assert_eq!(ids(r#"{ status = error } && { name = "auth" }"#), vec![2, 3]);
        assert_eq!(ids(r#"{ status = error } && { name = "nope" }"#), Vec::<u8>::new());
        assert_eq!(ids(r#"{ status = error } || { name = "auth" }"#), vec![2, 3]);
        assert_eq!(ids(r#"{ name = "nope" } || { name = "auth" }"#), vec![2]);
        // Structural binds tighter than &&; parentheses group.
        assert_eq!(ids(&format!(r#"{{ name = "auth" }} && {root} > {{ name = "db.query" }}"#)), vec![2, 3]);
        assert_eq!(ids(&format!(r#"({root} > {{}}) && {{ name = "cache" }}"#)), vec![2, 3, 5]);
        assert_eq!(ids(&format!(r#"{root} > ({{ name = "auth" }} || {{ name = "cache" }})"#)), vec![2]);
        assert_eq!(ids(r#"(({ kind = server }) >> ({ kind = internal }))"#), vec![4]);
    }

    #[test]
    fn structure_is_safe_with_cycles_and_missing_parents() {
        let t = trace();
        let mut spans = t.clone();
        // 1 -> 5 -> 4 -> 3 -> 1: a cycle; plus a self-parented span.
        spans[0].parent_span_id = Some(SpanId([5; 8]));
        spans[1].parent_span_id = Some(SpanId([2; 8]));
        let q = TraceQl::parse(r#"{ name = "cache" } >> {}"#).unwrap();
        let got: Vec<u8> = q.matching_spans(&spans).iter().map(|s| s.span_id.0[0]).collect();
        assert_eq!(got, vec![1, 3, 4, 5]);
        let q = TraceQl::parse(r#"{ name = "auth" } > {}"#).unwrap();
        assert!(q.matching_spans(&spans).is_empty());
        // No root: the root intrinsics are missing.
        let q = TraceQl::parse(r#"{ trace:rootName != "x" }"#).unwrap();
        assert!(q.matching_spans(&spans).is_empty());
        // A span whose parent is not in the trace has no parent here.
        let orphan = vec![t[4].clone()];
        let q = TraceQl::parse("{} > {}").unwrap();
        assert!(q.matching_spans(&orphan).is_empty());
    }

    #[test]
    fn parse_errors_have_positions() {
        let (msg, pos) = parse_err(r#"{ name = "abc }"#);
        assert!(msg.contains("unterminated string"), "{msg}");
        assert_eq!(pos, 9);
        let (msg, pos) = parse_err("{ foo = 1 }");
        assert!(msg.contains("unknown intrinsic `foo`"), "{msg}");
        assert_eq!(pos, 2);
        let (msg, pos) = parse_err("{ span:bogus = 1 }");
        assert!(msg.contains("unknown intrinsic `span:bogus`"), "{msg}");
        assert_eq!(pos, 2);
        let (msg, pos) = parse_err("{ } | count() > 2");
        assert!(msg.starts_with("not supported: pipelines"), "{msg}");
        assert_eq!(pos, 4);
        let e = TraceQl::parse("{ } | select(.a)").unwrap_err();
        assert_eq!(e.to_string(), format!("TraceQL: {} at position 4", parse_err("{ } | select(.a)").0));
        let (msg, pos) = parse_err(r#"{ name =~ "a+b" }"#);
        assert!(msg.contains("not supported: regex syntax `+`"), "{msg}");
        assert_eq!(pos, 10);
        let (msg, _) = parse_err(r#"{ name =~ "a.b" }"#);
        assert!(msg.contains("not supported: regex"), "{msg}");
        let (msg, _) = parse_err(r#"{ name =~ "[ab]" }"#);
        assert!(msg.contains("not supported: regex"), "{msg}");
        let (msg, _) = parse_err(r#"{ name =~ "\\d+" }"#);
        assert!(msg.contains("not supported: regex escape"), "{msg}");
        let (msg, pos) = parse_err(r#"{ name =~ .x }"#);
        assert!(msg.contains("string literal"), "{msg}");
        assert_eq!(pos, 10);
        let (msg, pos) = parse_err("{ name = 1 }");
        assert!(msg.contains("cannot compare a string with a number"), "{msg}");
        assert_eq!(pos, 9);
        let (msg, _) = parse_err("{ duration > 100 }");
        assert!(msg.contains("cannot compare a duration with a number"), "{msg}");
        let (msg, _) = parse_err("{ status > error }");
        assert!(msg.contains("does not apply"), "{msg}");
        let (msg, _) = parse_err("{ status = server }");
        assert!(msg.contains("cannot compare"), "{msg}");
        let (msg, pos) = parse_err(r#"{ name }"#);
        assert!(msg.contains("must be a condition"), "{msg}");
        assert_eq!(pos, 2);
        let (_, pos) = parse_err(r#"{ name = "a" "#);
        assert_eq!(pos, 13);
        let (msg, pos) = parse_err(r#"{ .a = 1 } {"#);
        assert!(msg.contains("unexpected `{` after the query"), "{msg}");
        assert_eq!(pos, 11);
        let (msg, _) = parse_err("{ .a = 1 = 2 }");
        assert!(msg.contains("chained"), "{msg}");
        let (msg, _) = parse_err("{ .a = nil && name > nil }");
        assert!(msg.contains("nil"), "{msg}");
        let (msg, _) = parse_err(r#"{ name = "a\q" }"#);
        assert!(msg.contains("invalid escape"), "{msg}");
        let (msg, _) = parse_err("");
        assert!(msg.contains("expected `{`"), "{msg}");
        let (msg, _) = parse_err("{ .a = 1 } ~");
        assert!(msg.contains("end of query"), "{msg}");
        let (msg, _) = parse_err("{ 99999999999999999999 = .a }");
        assert!(msg.contains("out of range"), "{msg}");
    }

    #[test]
    fn unsupported_features_say_so() {
        for q in [
            "{ } | count() > 2",
            "{ } | avg(duration) > 1s",
            "{ } | select(span.a)",
            "{ } | by(resource.service.name)",
            "{ .a = 1 } !> { .b = 2 }",
            "{ .a = 1 } !>> { .b = 2 }",
            "{ .a = 1 } << { .b = 2 }",
            "{ .a = 1 } < { .b = 2 }",
            "{ .a = 1 } &>> { .b = 2 }",
            "{ .a = 1 } !~ { .b = 2 }",
            "{ event.name = \"x\" }",
            "{ event:name = \"x\" }",
            "{ link.a = 1 }",
            "{ instrumentation:name = \"x\" }",
            "{ span:id = \"x\" }",
            "{ duration * 2 > 1s }",
            "{ coalesce() }",
            "{ count() > 1 }",
            "{ .a = 1 } || coalesce()",
            "{ name =~ \"(a|b)\" }",
        ] {
            let (msg, _) = parse_err(q);
            assert!(msg.starts_with("not supported:"), "{q}: {msg}");
        }
    }

    #[test]
    fn nesting_depth_is_capped() {
        let ok = format!("{}{{ true }}{}", "(".repeat(60), ")".repeat(60));
        assert_eq!(ids(&ok), vec![1, 2, 3, 4, 5]);
        let deep = format!("{}{{ true }}{}", "(".repeat(100_000), ")".repeat(100_000));
        let (msg, pos) = parse_err(&deep);
        assert!(msg.contains("nested too deeply"), "{msg}");
        assert_eq!(pos, 64);
        let deep = format!("{{ {}.a = 1{} }}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_err(&deep).0.contains("nested too deeply"));
        let deep = format!("{{ {}.flag }}", "!".repeat(100_000));
        assert!(parse_err(&deep).0.contains("nested too deeply"));
        assert_eq!(ids(&format!("{{ {}.flag }}", "!".repeat(10))), vec![4]);
        // Long flat chains are not nesting and evaluate without recursion.
        let long = vec![r#"{ name != "x" }"#; 5_000].join(" && ");
        assert_eq!(ids(&long), vec![1, 2, 3, 4, 5]);
        let long = format!("{{ {} }}", vec![".flag"; 5_000].join(" && "));
        assert_eq!(ids(&long), vec![4]);
        let long = vec!["{}"; 2_000].join(" >> ");
        assert!(ids(&long).is_empty());
    }

    fn cf(q: &str) -> SpanFilter {
        TraceQl::parse(q).unwrap().candidate_filter()
    }

    #[test]
    fn candidate_filter_maps_conjunctive_conditions() {
        let f = cf(r#"{ resource.service.name = "api" && name = "GET /x" && span.http.status_code = 500
            && .retry = true && resource.region = "eu" && duration > 100ms && duration <= 2s
            && status = error && .ratio = 0.5 && .other =~ "a.*" }"#);
        assert_eq!(f.service.as_deref(), Some("api"));
        assert_eq!(f.operation.as_deref(), Some("GET /x"));
        assert_eq!(
            f.attrs,
            vec![
                ("http.status_code".to_string(), "500".to_string()),
                ("retry".to_string(), "true".to_string()),
                ("region".to_string(), "eu".to_string()),
            ]
        );
        assert_eq!(f.min_duration_ns, Some(100_000_001));
        assert_eq!(f.max_duration_ns, Some(2_000_000_000));
        assert_eq!(f.status, Some(StatusFilter::Error));
        assert_eq!((f.start_ns, f.end_ns), (None, None));

        let f = cf("{ 1s <= span:duration && duration < 5s && duration >= 2s && span:name = \"a\" }");
        assert_eq!((f.min_duration_ns, f.max_duration_ns), (Some(2_000_000_000), Some(5_000_000_000)));
        assert_eq!(f.operation.as_deref(), Some("a"));
        assert_eq!(cf("{ .n = -3 }").attrs, vec![("n".to_string(), "-3".to_string())]);
        assert_eq!(cf("{ status = ok }").status, Some(StatusFilter::Ok));
        assert_eq!(cf("{ status != error }").status, Some(StatusFilter::Ok));
    }

    #[test]
    fn candidate_filter_never_narrows() {
        let empty = |f: &SpanFilter| filter_score(f) == 0;
        assert!(empty(&cf("{}")));
        assert!(empty(&cf(r#"{ name = "a" || name = "b" }"#)));
        assert!(empty(&cf(r#"{ name = "a" } || { name = "b" }"#)));
        assert!(empty(&cf(r#"{ !(name = "a") }"#)));
        assert!(empty(&cf(r#"{ name != "a" && .x != 1 && duration != 1s }"#)));
        assert!(empty(&cf(r#"{ .service.name = "a" && trace:rootService = "a" && trace:duration > 1s }"#)));
        assert!(empty(&cf(r#"{ .a = nil && .b > 3 && .c = 1.5 }"#)));
        // Disjunctions inside a conjunction are skipped, the rest kept.
        let f = cf(r#"{ (name = "a" || name = "b") && status = error }"#);
        assert_eq!((f.operation, f.status), (None, Some(StatusFilter::Error)));
        // Either side of && or a structural operator: the one with more conditions.
        let f = cf(r#"{ name = "a" } && { resource.service.name = "s" && status = error }"#);
        assert_eq!((f.service.as_deref(), f.operation.as_deref()), (Some("s"), None));
        let f = cf(r#"{ name = "a" } > { .x = "1" && .y = "2" }"#);
        assert_eq!(f.attrs.len(), 2);
        assert_eq!(f.operation, None);
        let f = cf(r#"{ name = "a" && kind = server } >> {}"#);
        assert_eq!(f.operation.as_deref(), Some("a"));
        assert!(empty(&cf(r#"({ name = "a" } || { name = "b" }) ~ {}"#)));

        // Whatever the filter, every trace the query matches passes it on
        // some span.
        let t = trace();
        for q in [
            r#"{ resource.service.name = "backend" && status = error && duration > 500ms }"#,
            r#"{ name = "GET /api" } > { kind = client && .db.rows = 10 }"#,
            r#"{ .http.response.status_code = 200 && span.http.method = "GET" }"#,
            r#"{ .count = 3 && .retry.factor > 1 }"#,
            r#"{ resource.host.cores = 8 && duration <= 800ms && duration >= 700ms }"#,
            r#"{ .code = "200" } && { status = ok }"#,
        ] {
            let tq = TraceQl::parse(q).unwrap();
            assert!(!tq.matching_spans(&t).is_empty(), "{q} should match");
            let f = tq.candidate_filter();
            assert!(filter_score(&f) > 0, "{q}");
            assert!(t.iter().any(|s| f.matches(s)), "{q}: {f:?}");
        }
    }

    proptest::proptest! {
        /// Any text is parsed or refused with an error: never a panic, a
        /// hang or a stack overflow (issue 10 item 13; `q` comes from any
        /// client, and its length is capped before parsing).
        #[test]
        fn parse_never_panics_on_any_text(q in "\\PC{0,300}") {
            let _ = TraceQl::parse(&q);
        }

        /// Text made of TraceQL's own tokens gets past the lexer and into
        /// the parser's every branch.
        #[test]
        fn parse_never_panics_on_token_soup(toks in proptest::collection::vec(proptest::sample::select(vec![
            "{", "}", "(", ")", "&&", "||", "!", "=", "!=", "=~", "!~", ">", "<", ">=", "<=", " ", ",", "|",
            "span.", "resource.", ".", "http.status_code", "duration", "name", "status", "kind", "error",
            "ok", "server", "statusMessage", "span:name", "\"x\"", "\"a.*\"", "5ms", "1.5", "-3", "true",
            "nil", "count()", "avg(duration)", "select(", "by(", "event.", "link.", "parent.",
        ]), 0..60)) {
            let q: String = toks.concat();
            let _ = TraceQl::parse(&q);
        }
    }
}
