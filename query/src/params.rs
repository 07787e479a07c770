//! Query-string parsing shared by every adapter: the one parser each for
//! trace IDs, points in time, time ranges, durations and limits.

use skein_storage::model::TraceId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};

/// The query string as ordered pairs; keys may repeat (`attr`).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

/// How an API spells a point in time in its query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Unix nanoseconds as decimal digits, or an RFC 3339 timestamp (the
    /// native API).
    NanosOrRfc3339,
    /// Unix microseconds (Jaeger's `start`, `end`).
    Micros,
    /// Unix milliseconds (Jaeger's `endTs`).
    Millis,
    /// Unix seconds (Tempo's `start`, `end`).
    Seconds,
}

impl Params {
    /// Splits a raw query string (`application/x-www-form-urlencoded`).
    pub fn parse(q: Option<&str>) -> Params {
        Params(
            form_urlencoded::parse(q.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last non-empty value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().rev().find(|(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// Every non-empty value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    /// `key` as Unix nanoseconds or RFC 3339, in Unix ns; 400 if malformed.
    pub fn time(&self, key: &str) -> Result<Option<u64>> {
        self.time_in(key, TimeUnit::NanosOrRfc3339)
    }

    /// `key` as a point in time spelled in `unit`, converted to Unix ns;
    /// 400 if malformed, or if the digits cannot be a time in `unit` (see
    /// [`parse_time_in`]).
    pub fn time_in(&self, key: &str, unit: TimeUnit) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| parse_time_in(v, unit).map_err(|e| Error::bad(format!("{key}: {e}"))))
            .transpose()
    }

    /// The optional bounds `start_key` and `end_key` in `unit`, as Unix ns;
    /// 400 if either is malformed or the start is after the end.
    pub fn range(&self, start_key: &str, end_key: &str, unit: TimeUnit) -> Result<TimeRange> {
        let r = TimeRange { start_ns: self.time_in(start_key, unit)?, end_ns: self.time_in(end_key, unit)? };
        if let (Some(a), Some(b)) = (r.start_ns, r.end_ns) {
            if a > b {
                return Err(Error::bad(format!("{start_key} is after {end_key}")));
            }
        }
        Ok(r)
    }

    /// `key` as a duration (see [`parse_duration_ns`]), in ns; 400 if
    /// malformed.
    pub fn duration(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|v| parse_duration_ns(v).map_err(|e| Error::bad(format!("{key}: {e}")))).transpose()
    }

    /// `key` as a trace ID (see [`parse_trace_id`]).
    pub fn trace_id(&self, key: &str) -> Result<Option<TraceId>> {
        self.get(key).map(parse_trace_id).transpose()
    }

    /// `limit`, defaulting to `default` and capped at `max`; 400 unless a
    /// positive integer.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize> {
        self.capped_limit(default, max).map(|l| l.value)
    }

    /// `limit` as [`Params::limit`] applies it, saying whether the cap
    /// cut it, so an answer can report that it holds fewer results than
    /// asked for.
    pub fn capped_limit(&self, default: usize, max: usize) -> Result<Limit> {
        match self.get("limit") {
            None => Ok(Limit { value: default.min(max), capped: default > max }),
            Some(v) => {
                let n: usize =
                    v.parse().map_err(|_| Error::bad(format!("limit: {v:?} is not a positive integer")))?;
                if n == 0 {
                    return Err(Error::bad("limit: must be at least 1"));
                }
                Ok(Limit { value: n.min(max), capped: n > max })
            }
        }
    }

    /// 400 unless every parameter's name is in `known`. A misspelt name
    /// (`serivce=`) would otherwise be ignored and widen the query without
    /// a sign; the message names the parameter, the closest accepted name
    /// and every accepted one. Only the native API checks: Jaeger's and
    /// Tempo's clients send parameters of their own that Skein has no use
    /// for.
    pub fn only(&self, known: &[&str]) -> Result<()> {
        let Some((k, _)) = self.0.iter().find(|(k, _)| !known.contains(&k.as_str())) else { return Ok(()) };
        if known.is_empty() {
            return Err(Error::bad(format!("unknown parameter {k:?}: this endpoint takes no parameters")));
        }
        let closest = known
            .iter()
            .map(|c| (strsim::damerau_levenshtein(k, c), *c))
            .filter(|(d, c)| *d <= 2.max(c.len() / 3))
            .min()
            .map(|(_, c)| format!(" (did you mean {c:?}?)"))
            .unwrap_or_default();
        Err(Error::bad(format!("unknown parameter {k:?}{closest}; accepted: {}", known.join(", "))))
    }
}

/// A `limit` as applied to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Results returned at most.
    pub value: usize,
    /// Whether the request asked for more than `query.max_limit` (or the
    /// default exceeds it), so `value` is the cap.
    pub capped: bool,
}

/// Optional inclusive bounds in Unix ns, `start_ns <= end_ns` when both
/// are given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Earliest time, Unix ns.
    pub start_ns: Option<u64>,
    /// Latest time, Unix ns.
    pub end_ns: Option<u64>,
}

impl TimeRange {
    /// 400 when both bounds are given and lie more than `max`
    /// (`query.max_range`) apart, as Tempo refuses a search longer than
    /// its `max_duration`; the message names both keys and the limit. A
    /// range open on either side is not checked (its cost is bounded by
    /// the data kept, and the query deadline bounds the rest).
    pub fn within(&self, max: std::time::Duration, start_key: &str, end_key: &str) -> Result<()> {
        let (Some(a), Some(b)) = (self.start_ns, self.end_ns) else { return Ok(()) };
        let span = std::time::Duration::from_nanos(b.saturating_sub(a));
        if span > max {
            return Err(Error::bad(format!(
                "{start_key}..{end_key} covers {}, more than {} (query.max_range); narrow the range",
                days(span),
                days(max)
            )));
        }
        Ok(())
    }

    /// Both bounds, with `end` defaulting to now and `start` to `end - lookback_ns`.
    pub fn or_last(self, lookback_ns: u64) -> (u64, u64) {
        let end = self.end_ns.unwrap_or_else(skein_storage::now_unix_nano);
        let start = self.start_ns.unwrap_or(end.saturating_sub(lookback_ns));
        (start, end)
    }
}

/// `d` in whole days (`40d`) when it is whole days, else as humantime
/// writes it to the second (`humantime` counts months of 30.44 days,
/// which no one sets a limit in).
fn days(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else {
        humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
    }
}

/// A trace ID of 1-32 hex digits (shorter IDs are left-padded with zeroes,
/// as Jaeger sends 64-bit IDs); 400 otherwise. The all-zero ID is a 400
/// too: W3C Trace Context and OTLP call it invalid, and storage keeps log
/// records without trace context under it, so serving it would show them
/// as one "trace"; those records are found through log search.
pub fn parse_trace_id(s: &str) -> Result<TraceId> {
    let id =
        TraceId::parse_hex(s).ok_or_else(|| Error::bad(format!("trace ID {s:?} is not 1-32 hex digits")))?;
    if id.is_zero() {
        return Err(Error::bad(format!(
            "trace ID {s:?} is all zeroes, which no trace has (W3C Trace Context); \
             log records without trace context are found through log search"
        )));
    }
    Ok(id)
}

/// 1971-01-01T00:00:00Z in Unix ns. Digits that, read in an API's unit,
/// give an earlier time are taken for a unit mix-up rather than a query
/// about 1970 (0 excepted: "since the epoch" is the same in every unit).
const EARLIEST_NS: u64 = 365 * 86_400 * 1_000_000_000;

/// The digit-only spellings of a point in time: ns per unit and its name.
const DIGIT_UNITS: [(u64, &str); 4] = [
    (1_000_000_000, "Unix seconds"),
    (1_000_000, "Unix milliseconds"),
    (1_000, "Unix microseconds"),
    (1, "Unix nanoseconds"),
];

/// `n` in the unit of `ns_per` as Unix ns, if that lies between 1971 and
/// the end of u64 nanoseconds (2554).
fn plausible(n: u64, ns_per: u64) -> Option<u64> {
    n.checked_mul(ns_per).filter(|&ns| ns >= EARLIEST_NS)
}

fn rfc3339(ns: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A point in time spelled in `unit`, as Unix ns. Digits that are not a
/// time after 1970 in `unit` but are one in another unit (`start` in
/// seconds where the native API takes nanoseconds, say) are refused with
/// the unit they look like, since the query would otherwise find nothing
/// and say nothing.
pub fn parse_time_in(v: &str, unit: TimeUnit) -> Result<u64, String> {
    let (ns_per, what) = match unit {
        TimeUnit::NanosOrRfc3339 => return parse_time(v),
        TimeUnit::Micros => DIGIT_UNITS[2],
        TimeUnit::Millis => DIGIT_UNITS[1],
        TimeUnit::Seconds => DIGIT_UNITS[0],
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{v:?} is not {what}"));
    }
    digits_in(v, ns_per, what, &format!("give {what}"))
}

/// Digits `v` in the unit of `ns_per` (named `what`), as Unix ns; `give`
/// says what to write instead of a value that cannot be a time in it.
fn digits_in(v: &str, ns_per: u64, what: &str, give: &str) -> Result<u64, String> {
    let n: u64 = v.parse().map_err(|_| format!("{v:?} is out of range for {what}"))?;
    if n == 0 {
        return Ok(0);
    }
    if let Some(ns) = plausible(n, ns_per) {
        return Ok(ns);
    }
    let when = if n.checked_mul(ns_per).is_some() { "before 1971" } else { "after 2554" };
    let guess = DIGIT_UNITS
        .iter()
        .filter(|(p, _)| *p != ns_per)
        .find_map(|(p, name)| plausible(n, *p).map(|ns| format!("; it looks like {name} ({})", rfc3339(ns))))
        .unwrap_or_default();
    Err(format!("{v} is {when} read as {what}{guess}: {give}"))
}

/// Unix nanoseconds as decimal digits, or an RFC 3339 timestamp. Digits
/// before 1971 as nanoseconds (other than 0) are refused with the unit
/// they look like (see [`parse_time_in`]).
pub fn parse_time(v: &str) -> Result<u64, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return digits_in(v, 1, "Unix nanoseconds", "give Unix nanoseconds or an RFC 3339 time");
    }
    let t = OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|_| format!("{v:?} is neither Unix nanoseconds nor an RFC 3339 time"))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{v:?} is before 1970"))
}

/// The units a duration takes, as its 400 message lists them.
const DURATION_UNITS: &str = "ns, us (or µs), ms, s, m or h";

/// `250ms`, `1.5s`, `900us`, `2m`, `1h`, `100ns`, and sequences of them
/// such as `1h30m` or `1m30.5s`, as Go's `time.ParseDuration` (the syntax
/// of Jaeger's and Tempo's durations) reads them. A number without a unit
/// is a 400 naming the units (a bare `5` was once read as 5 ns, so
/// `min_duration=5` matched everything); `0` alone is accepted, as Go
/// accepts it.
pub fn parse_duration_ns(v: &str) -> Result<u64, String> {
    let v = v.trim();
    if v == "0" {
        return Ok(0);
    }
    if v.is_empty() {
        return Err(format!("{v:?} is not a duration like 250ms or 1.5s"));
    }
    let mut rest = v;
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a duration like 250ms or 1.5s"))?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let mult = match unit.trim() {
            "" => {
                return Err(format!(
                    "{v:?} has no unit; write it with one of {DURATION_UNITS} (e.g. 250ms, 1.5s, 1h30m)"
                ))
            }
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            u => return Err(format!("unknown unit {u:?} in {v:?} (use {DURATION_UNITS})")),
        };
        total += n * mult;
        rest = next;
    }
    if !total.is_finite() || total < 0.0 || total > u64::MAX as f64 {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration_ns("900us").unwrap(), 900_000);
        assert_eq!(parse_duration_ns("42ns").unwrap(), 42);
        assert_eq!(parse_duration_ns("0").unwrap(), 0);
        // Go's sequences (issue 9 review: Jaeger's minDuration=1h30m was a 400).
        assert_eq!(parse_duration_ns("1h30m").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration_ns("1m30.5s").unwrap(), 90_500_000_000);
        assert_eq!(parse_duration_ns("2s500ms").unwrap(), 2_500_000_000);
        assert!(parse_duration_ns("1h30").unwrap_err().contains("has no unit"));
        assert!(parse_duration_ns("1h30x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration_ns("fast").is_err());
        assert!(parse_duration_ns("5 parsecs").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1731000000123456789").unwrap(), 1_731_000_000_123_456_789);
        assert_eq!(parse_time("2024-11-07T17:20:00Z").unwrap(), 1_731_000_000_000_000_000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_time("0").unwrap(), 0);
    }

    /// A number without a unit is refused with the units to use.
    #[test]
    fn a_duration_needs_a_unit() {
        let e = parse_duration_ns("5").unwrap_err();
        assert!(e.contains("no unit") && e.contains("ms") && e.contains("250ms"), "{e}");
        let e = Params::parse(Some("min_duration=5")).duration("min_duration").unwrap_err().to_string();
        assert!(e.starts_with("min_duration: ") && e.contains("no unit"), "{e}");
        assert!(parse_duration_ns("1.5").is_err());
    }

    /// Digits that are only a time in another unit name that unit, in
    /// whichever unit the API takes.
    #[test]
    fn times_in_the_wrong_unit_say_which_unit_they_look_like() {
        let looks = |v: &str, unit: TimeUnit| parse_time_in(v, unit).unwrap_err();
        let e = looks("1731000000", TimeUnit::NanosOrRfc3339);
        assert!(e.contains("before 1971 read as Unix nanoseconds"), "{e}");
        assert!(e.contains("looks like Unix seconds (2024-11-07T17:20:00Z)"), "{e}");
        assert!(looks("1731000000123", TimeUnit::NanosOrRfc3339).contains("looks like Unix milliseconds"));
        assert!(looks("1731000000123456", TimeUnit::NanosOrRfc3339).contains("looks like Unix microseconds"));
        // Jaeger takes µs: seconds and ms are too early, ns too late.
        assert!(looks("1731000000", TimeUnit::Micros).contains("looks like Unix seconds"));
        let e = looks("1731000000123456789", TimeUnit::Micros);
        assert!(e.contains("after 2554") && e.contains("looks like Unix nanoseconds"), "{e}");
        // Tempo takes seconds.
        assert!(looks("1731000000123", TimeUnit::Seconds).contains("looks like Unix milliseconds"));
        assert!(looks("17", TimeUnit::NanosOrRfc3339).contains("give Unix nanoseconds or an RFC 3339 time"));
        assert_eq!(parse_time_in("1731000000", TimeUnit::Seconds).unwrap(), 1_731_000_000_000_000_000);
        assert_eq!(parse_time_in("1731000000123456", TimeUnit::Micros).unwrap(), 1_731_000_000_123_456_000);
        assert_eq!(parse_time_in("0", TimeUnit::Micros).unwrap(), 0);
        let e = Params::parse(Some("end=1731000000")).time("end").unwrap_err().to_string();
        assert!(e.starts_with("end: 1731000000 is before 1971"), "{e}");
    }

    #[test]
    fn unknown_parameters_are_named_with_the_accepted_ones() {
        let known = ["service", "operation", "limit"];
        assert!(Params::parse(Some("service=a&limit=5&service=")).only(&known).is_ok());
        let e = Params::parse(Some("serivce=cart&limit=5")).only(&known).unwrap_err().to_string();
        assert!(e.contains(r#"unknown parameter "serivce" (did you mean "service"?)"#), "{e}");
        assert!(e.ends_with("accepted: service, operation, limit"), "{e}");
        let e = Params::parse(Some("zzz=")).only(&known).unwrap_err().to_string();
        assert!(e.starts_with(r#"unknown parameter "zzz"; accepted"#), "{e}");
        assert!(Params::parse(Some("x=1"))
            .only(&[])
            .unwrap_err()
            .to_string()
            .contains("takes no parameters"));
    }

    #[test]
    fn a_capped_limit_says_so() {
        let l = |q: &str| Params::parse(Some(q)).capped_limit(20, 1000).unwrap();
        assert_eq!(l("limit=100000"), Limit { value: 1000, capped: true });
        assert_eq!(l("limit=1000"), Limit { value: 1000, capped: false });
        assert_eq!(l(""), Limit { value: 20, capped: false });
    }

    #[test]
    fn ranges_in_every_unit() {
        let p = Params::parse(Some("start=1731000000&end=1731000060&bad=x&ts=2024-11-07T17:20:00Z"));
        let r = p.range("start", "end", TimeUnit::Seconds).unwrap();
        assert_eq!(
            (r.start_ns, r.end_ns),
            (Some(1_731_000_000_000_000_000), Some(1_731_000_060_000_000_000))
        );
        let p =
            Params::parse(Some("start=1731000000000000&end=1731000060000000&bad=x&ts=2024-11-07T17:20:00Z"));
        let r = p.range("start", "end", TimeUnit::Micros).unwrap();
        assert_eq!(
            (r.start_ns, r.end_ns),
            (Some(1_731_000_000_000_000_000), Some(1_731_000_060_000_000_000))
        );
        assert_eq!(p.time_in("ts", TimeUnit::Millis).ok(), None);
        assert_eq!(p.time("ts").unwrap(), Some(1_731_000_000_000_000_000));
        let ms = Params::parse(Some("endTs=1731000000000"));
        assert_eq!(ms.time_in("endTs", TimeUnit::Millis).unwrap(), Some(1_731_000_000_000_000_000));
        let ns = Params::parse(Some("a=1731000000000000001&b=1731000000000000000"));
        let e = ns.range("a", "b", TimeUnit::NanosOrRfc3339).unwrap_err().to_string();
        assert_eq!(e, "a is after b");
        assert!(p.time_in("bad", TimeUnit::Seconds).is_err());
        assert_eq!(p.range("none", "end", TimeUnit::Micros).unwrap().start_ns, None);
    }

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("abc").unwrap().to_hex(), format!("{:0>32}", "abc"));
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
        for zero in ["0", "0000000000000000", &"0".repeat(32)] {
            let e = parse_trace_id(zero).unwrap_err();
            assert!(matches!(&e, Error::BadRequest(m) if m.contains("all zeroes")), "{e}");
        }
    }

    #[test]
    fn repeated_keys() {
        let p = Params::parse(Some("attr=a%3D1&attr=b=2&limit=5&service="));
        assert_eq!(p.all("attr").collect::<Vec<_>>(), vec!["a=1", "b=2"]);
        assert_eq!(p.get("service"), None);
        assert_eq!(p.limit(20, 3).unwrap(), 3);
    }

    proptest::proptest! {
        /// The parameter parsers refuse what they cannot read with an
        /// error, never a panic (issue 10 item 13).
        #[test]
        fn parsers_never_panic(v in "\\PC{0,80}") {
            let _ = parse_duration_ns(&v);
            let _ = parse_time(&v);
            let _ = parse_trace_id(&v);
            for unit in [TimeUnit::NanosOrRfc3339, TimeUnit::Micros, TimeUnit::Millis, TimeUnit::Seconds] {
                let _ = parse_time_in(&v, unit);
            }
            let _ = Params::parse(Some(&v)).limit(20, 1000);
        }

        /// A duration written with a unit reads back as the same number
        /// of nanoseconds.
        #[test]
        fn durations_round_trip(ns in 0u64..10_000_000_000_000, unit in 0usize..3) {
            let (text, want) = match unit {
                0 => (format!("{ns}ns"), ns),
                1 => (format!("{}us", ns / 1_000), ns / 1_000 * 1_000),
                _ => (format!("{}ms", ns / 1_000_000), ns / 1_000_000 * 1_000_000),
            };
            proptest::prop_assert_eq!(parse_duration_ns(&text).unwrap(), want);
        }
    }
}
