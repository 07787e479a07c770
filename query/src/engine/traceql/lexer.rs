//! TraceQL's tokens, as Tempo's lexer (`pkg/traceql/lexer.go`) cuts them:
//! operators longest first (`!>>` before `!>` before `!`), attribute names
//! after a scope's `.` running to the next whitespace or operator character
//! (so `span.http.route` and `.a-b` are one name each), quoted names
//! (`span."a b"`, also after an unquoted part: `span.a."b c"`), scoped
//! intrinsics (`span:name`, `trace:id`), numbers, durations (`1h30m`,
//! `250ms`) and strings (`"..."` with escapes, or raw `` `...` ``).

use super::ast::{AttrScope, Attribute};
use super::PErr;

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Pipe,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Re,
    NRe,
    /// `>>`
    Desc,
    /// `<<`
    Ance,
    /// `~`
    Sibl,
    /// `!>`
    NotChild,
    /// `!<`
    NotParent,
    /// `!>>`
    NotDesc,
    /// `!<<`
    NotAnce,
    /// `&>`
    UChild,
    /// `&<`
    UParent,
    /// `&>>`
    UDesc,
    /// `&<<`
    UAnce,
    /// `&~`
    USibl,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Dur(i64),
    /// A bare word: keyword, intrinsic, function or hint name.
    Word(String),
    Attr(Attribute),
    /// `span:name`, `trace:rootService`: (scope, name).
    Scoped(String, String),
    Eof,
}

impl Tok {
    /// How an error message names the token.
    pub(super) fn describe(&self) -> String {
        let sym = match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::Comma => ",",
            Tok::Pipe => "|",
            Tok::And => "&&",
            Tok::Or => "||",
            Tok::Not => "!",
            Tok::Eq => "=",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Re => "=~",
            Tok::NRe => "!~",
            Tok::Desc => ">>",
            Tok::Ance => "<<",
            Tok::Sibl => "~",
            Tok::NotChild => "!>",
            Tok::NotParent => "!<",
            Tok::NotDesc => "!>>",
            Tok::NotAnce => "!<<",
            Tok::UChild => "&>",
            Tok::UParent => "&<",
            Tok::UDesc => "&>>",
            Tok::UAnce => "&<<",
            Tok::USibl => "&~",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            Tok::Str(s) => return format!("string {s:?}"),
            Tok::Int(i) => return format!("number {i}"),
            Tok::Float(f) => return format!("number {f}"),
            Tok::Dur(_) => return "duration".into(),
            Tok::Word(w) => return format!("`{w}`"),
            Tok::Attr(a) => return format!("attribute `{a}`"),
            Tok::Scoped(s, n) => return format!("`{s}:{n}`"),
            Tok::Eof => return "end of query".into(),
        };
        format!("`{sym}`")
    }
}

/// A token and the byte offset where it starts.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) pos: usize,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters of an unquoted attribute name: anything but whitespace and
/// the characters that start an operator or delimiter (Tempo's
/// `isAttributeRune`), so `-`, `+`, `/`, `:` and `.` are part of a name.
fn is_attr_char(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ',' | '"' | '`'
        )
}

/// Cuts `q` into tokens, ending with [`Tok::Eof`].
pub(super) fn tokens(q: &str) -> Result<Vec<Token>, PErr> {
    Lexer { q, i: 0 }.run()
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

    fn starts(&self, s: &str) -> bool {
        self.q[self.i..].starts_with(s)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += c.len_utf8();
        Some(c)
    }

    fn run(mut self) -> Result<Vec<Token>, PErr> {
        // Longest first within each leading character.
        const OPS: &[(&str, Tok)] = &[
            ("!>>", Tok::NotDesc),
            ("!<<", Tok::NotAnce),
            ("&>>", Tok::UDesc),
            ("&<<", Tok::UAnce),
            ("&&", Tok::And),
            ("||", Tok::Or),
            ("=~", Tok::Re),
            ("!=", Tok::Ne),
            ("!~", Tok::NRe),
            ("!>", Tok::NotChild),
            ("!<", Tok::NotParent),
            ("&>", Tok::UChild),
            ("&<", Tok::UParent),
            ("&~", Tok::USibl),
            (">>", Tok::Desc),
            ("<<", Tok::Ance),
            (">=", Tok::Ge),
            ("<=", Tok::Le),
            ("{", Tok::LBrace),
            ("}", Tok::RBrace),
            ("(", Tok::LParen),
            (")", Tok::RParen),
            (",", Tok::Comma),
            ("|", Tok::Pipe),
            ("!", Tok::Not),
            ("=", Tok::Eq),
            ("<", Tok::Lt),
            (">", Tok::Gt),
            ("~", Tok::Sibl),
            ("+", Tok::Add),
            ("-", Tok::Sub),
            ("*", Tok::Mul),
            ("/", Tok::Div),
            ("%", Tok::Mod),
            ("^", Tok::Pow),
        ];
        let mut out = Vec::new();
        'next: loop {
            while self.peek().is_some_and(char::is_whitespace) {
                self.bump();
            }
            let pos = self.i;
            let Some(c) = self.peek() else {
                out.push(Token { tok: Tok::Eof, pos });
                return Ok(out);
            };
            if self.starts("==") {
                return Err(PErr::new(pos, "unexpected `==`; use `=`"));
            }
            let tok = match c {
                '"' => Tok::Str(self.string(pos)?),
                '`' => self.raw_string(pos)?,
                '.' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => self.number(pos)?,
                '.' => {
                    self.bump();
                    Tok::Attr(Attribute::new(AttrScope::Unscoped, false, self.attr_key(pos)?))
                }
                c if c.is_ascii_digit() => self.number(pos)?,
                c if is_ident_start(c) => self.word(pos)?,
                _ => {
                    for (s, t) in OPS {
                        if self.starts(s) {
                            self.i += s.len();
                            out.push(Token { tok: t.clone(), pos });
                            continue 'next;
                        }
                    }
                    return Err(PErr::new(pos, format!("unexpected character {c:?}")));
                }
            };
            out.push(Token { tok, pos });
        }
    }

    /// A `"..."` string; Tempo's escapes (`\" \\ \n \t \r`), and any
    /// other escaped character kept with its backslash so that regex
    /// escapes (`"\d+"`, `"a\.b"`) reach the regex as written.
    fn string(&mut self, pos: usize) -> Result<String, PErr> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None => return Err(PErr::new(pos, "unterminated string")),
                Some('"') => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('"') => s.push('"'),
                    Some('\\') => s.push('\\'),
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    None => return Err(PErr::new(pos, "unterminated string")),
                    Some(c) => {
                        s.push('\\');
                        s.push(c);
                    }
                },
                Some(c) => s.push(c),
            }
        }
    }

    fn raw_string(&mut self, pos: usize) -> Result<Tok, PErr> {
        self.bump();
        let start = self.i;
        match self.q[start..].find('`') {
            Some(n) => {
                self.i = start + n + 1;
                Ok(Tok::Str(self.q[start..start + n].to_string()))
            }
            None => Err(PErr::new(pos, "unterminated string")),
        }
    }

    /// An attribute name after its scope's `.`: unquoted runs and quoted
    /// parts (only `\"` and `\\` escapes, as Tempo), concatenated.
    fn attr_key(&mut self, pos: usize) -> Result<String, PErr> {
        let mut key = String::new();
        loop {
            match self.peek() {
                Some('"') => {
                    let spos = self.i;
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(PErr::new(spos, "unterminated quoted attribute name")),
                            Some('"') => break,
                            Some('\\') => match self.bump() {
                                Some(c @ ('"' | '\\')) => key.push(c),
                                Some(c) => {
                                    return Err(PErr::new(
                                        self.i - c.len_utf8() - 1,
                                        format!("invalid escape `\\{c}` in an attribute name (only `\\\"` and `\\\\`)"),
                                    ))
                                }
                                None => return Err(PErr::new(spos, "unterminated quoted attribute name")),
                            },
                            Some(c) => key.push(c),
                        }
                    }
                }
                Some(c) if is_attr_char(c) => {
                    while self.peek().is_some_and(is_attr_char) {
                        key.push(self.bump().expect("peeked"));
                    }
                }
                _ => break,
            }
        }
        if key.is_empty() {
            return Err(PErr::new(pos, "expected an attribute name after `.`"));
        }
        Ok(key)
    }

    fn number(&mut self, pos: usize) -> Result<Tok, PErr> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '.' || c == 'µ' || c == '_') {
            self.bump();
        }
        let text = &self.q[start..self.i];
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<i64>()
                .map(Tok::Int)
                .map_err(|_| PErr::new(pos, format!("integer {text} out of range")));
        }
        if let Some((a, b)) = text.split_once('.') {
            if !b.is_empty() && a.bytes().all(|c| c.is_ascii_digit()) && b.bytes().all(|c| c.is_ascii_digit())
            {
                return text
                    .parse::<f64>()
                    .map(Tok::Float)
                    .map_err(|_| PErr::new(pos, format!("invalid number {text}")));
            }
        }
        parse_duration(text).map(Tok::Dur).map_err(|msg| PErr::new(pos, msg))
    }

    fn word(&mut self, pos: usize) -> Result<Tok, PErr> {
        let start = self.i;
        while self.peek().is_some_and(is_ident_char) {
            self.bump();
        }
        let w = self.q[start..self.i].to_string();
        match self.peek() {
            Some('.') => {
                let scope = match w.as_str() {
                    "span" => AttrScope::Span,
                    "resource" => AttrScope::Resource,
                    "event" => AttrScope::Event,
                    "link" => AttrScope::Link,
                    "instrumentation" => AttrScope::Instrumentation,
                    "parent" => {
                        self.bump();
                        // `parent.span.x`, `parent.resource.x`, `parent.x`.
                        for (prefix, scope) in
                            [("span.", AttrScope::Span), ("resource.", AttrScope::Resource)]
                        {
                            if self.starts(prefix)
                                && self.q[self.i + prefix.len()..]
                                    .chars()
                                    .next()
                                    .is_some_and(|c| c == '"' || is_attr_char(c))
                            {
                                self.i += prefix.len();
                                return Ok(Tok::Attr(Attribute::new(scope, true, self.attr_key(pos)?)));
                            }
                        }
                        return Ok(Tok::Attr(Attribute::new(AttrScope::Unscoped, true, self.attr_key(pos)?)));
                    }
                    _ => {
                        return Err(PErr::new(
                            pos,
                            format!(
                                "unknown attribute scope `{w}.` (use span., resource., event., link., \
                                 instrumentation., parent. or .)"
                            ),
                        ))
                    }
                };
                self.bump();
                Ok(Tok::Attr(Attribute::new(scope, false, self.attr_key(pos)?)))
            }
            Some(':') if matches!(w.as_str(), "span" | "trace" | "event" | "link" | "instrumentation") => {
                self.bump();
                let nstart = self.i;
                while self.peek().is_some_and(is_ident_char) {
                    self.bump();
                }
                if nstart == self.i {
                    return Err(PErr::new(pos, format!("expected an intrinsic name after `{w}:`")));
                }
                Ok(Tok::Scoped(w, self.q[nstart..self.i].to_string()))
            }
            Some(':') => Err(PErr::new(
                pos,
                format!(
                    "unknown intrinsic scope `{w}:` (use span:, trace:, event:, link: or instrumentation:)"
                ),
            )),
            _ => Ok(Tok::Word(w)),
        }
    }
}

/// Parses `250ms`, `1.5s`, `1h30m` (units ns, us, µs, ms, s, m, h) into
/// nanoseconds.
pub(super) fn parse_duration(text: &str) -> Result<i64, String> {
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
    i64::try_from(total).map_err(|_| format!("duration {text:?} out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(q: &str) -> Vec<Tok> {
        tokens(q).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_longest_first() {
        assert_eq!(
            toks("!>> !> ! != !~ !<< !< &>> &> && &<< &< &~ >> >= > << <= < =~ = ~ | || + - * / % ^ ,"),
            vec![
                Tok::NotDesc,
                Tok::NotChild,
                Tok::Not,
                Tok::Ne,
                Tok::NRe,
                Tok::NotAnce,
                Tok::NotParent,
                Tok::UDesc,
                Tok::UChild,
                Tok::And,
                Tok::UAnce,
                Tok::UParent,
                Tok::USibl,
                Tok::Desc,
                Tok::Ge,
                Tok::Gt,
                Tok::Ance,
                Tok::Le,
                Tok::Lt,
                Tok::Re,
                Tok::Eq,
                Tok::Sibl,
                Tok::Pipe,
                Tok::Or,
                Tok::Add,
                Tok::Sub,
                Tok::Mul,
                Tok::Div,
                Tok::Mod,
                Tok::Pow,
                Tok::Comma,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn attributes_and_scopes() {
        let a = |s, p, n: &str| Tok::Attr(Attribute::new(s, p, n.to_string()));
        assert_eq!(toks("span.http.route")[0], a(AttrScope::Span, false, "http.route"));
        assert_eq!(toks(".a-b/c")[0], a(AttrScope::Unscoped, false, "a-b/c"));
        assert_eq!(toks(r#"span."a b""#)[0], a(AttrScope::Span, false, "a b"));
        assert_eq!(toks(r#"span.a."b \"c\"".d"#)[0], a(AttrScope::Span, false, "a.b \"c\".d"));
        assert_eq!(toks("parent.span.x")[0], a(AttrScope::Span, true, "x"));
        assert_eq!(toks("parent.resource.x")[0], a(AttrScope::Resource, true, "x"));
        assert_eq!(toks("parent.x")[0], a(AttrScope::Unscoped, true, "x"));
        assert_eq!(toks("event.exception.message")[0], a(AttrScope::Event, false, "exception.message"));
        assert_eq!(toks("link.a")[0], a(AttrScope::Link, false, "a"));
        assert_eq!(toks("instrumentation.lang")[0], a(AttrScope::Instrumentation, false, "lang"));
        assert_eq!(toks("trace:rootService")[0], Tok::Scoped("trace".into(), "rootService".into()));
        assert_eq!(toks(".a=1")[..3], [a(AttrScope::Unscoped, false, "a"), Tok::Eq, Tok::Int(1)]);
    }

    #[test]
    fn literals() {
        assert_eq!(toks(r#""a\"b\\c\d""#)[0], Tok::Str("a\"b\\c\\d".into()));
        assert_eq!(toks("`a\\b`")[0], Tok::Str("a\\b".into()));
        assert_eq!(
            toks("1.5 .95 42 1h30m 250ms 3µs")[..6],
            [
                Tok::Float(1.5),
                Tok::Float(0.95),
                Tok::Int(42),
                Tok::Dur(5_400_000_000_000),
                Tok::Dur(250_000_000),
                Tok::Dur(3_000)
            ]
        );
        assert!(tokens("1x").is_err());
        assert!(tokens("99999999999999999999").is_err());
        assert!(tokens("\"abc").is_err());
        assert!(tokens("a == b").is_err());
        assert!(tokens("foo:bar").is_err());
        assert!(tokens("foo.bar").is_err());
        assert!(tokens("#").is_err());
    }
}
