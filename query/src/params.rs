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

    /// `key` as a point in time spelled in `unit`, converted to Unix ns
    /// (saturating); 400 if malformed.
    pub fn time_in(&self, key: &str, unit: TimeUnit) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let (mult, what) = match unit {
            TimeUnit::NanosOrRfc3339 => {
                return parse_time(v).map(Some).map_err(|e| Error::bad(format!("{key}: {e}")));
            }
            TimeUnit::Micros => (1_000, "Unix microseconds"),
            TimeUnit::Millis => (1_000_000, "Unix milliseconds"),
            TimeUnit::Seconds => (1_000_000_000, "Unix seconds"),
        };
        v.parse::<u64>()
            .map(|n| Some(n.saturating_mul(mult)))
            .map_err(|_| Error::bad(format!("{key}: {v:?} is not {what}")))
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
        match self.get("limit") {
            None => Ok(default.min(max)),
            Some(v) => {
                let n: usize =
                    v.parse().map_err(|_| Error::bad(format!("limit: {v:?} is not a positive integer")))?;
                if n == 0 {
                    return Err(Error::bad("limit: must be at least 1"));
                }
                Ok(n.min(max))
            }
        }
    }
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
    /// Both bounds, with `end` defaulting to now and `start` to `end - lookback_ns`.
    pub fn or_last(self, lookback_ns: u64) -> (u64, u64) {
        let end = self.end_ns.unwrap_or_else(skein_storage::now_unix_nano);
        let start = self.start_ns.unwrap_or(end.saturating_sub(lookback_ns));
        (start, end)
    }
}

/// A trace ID of 1-32 hex digits (shorter IDs are left-padded with zeroes,
/// as Jaeger sends 64-bit IDs); 400 otherwise.
pub fn parse_trace_id(s: &str) -> Result<TraceId> {
    TraceId::parse_hex(s).ok_or_else(|| Error::bad(format!("trace ID {s:?} is not 1-32 hex digits")))
}

/// Unix nanoseconds as decimal digits, or an RFC 3339 timestamp.
pub fn parse_time(v: &str) -> Result<u64, String> {
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().map_err(|_| format!("{v:?} is out of range"));
    }
    let t = OffsetDateTime::parse(v, &Rfc3339)
        .map_err(|_| format!("{v:?} is neither Unix nanoseconds nor an RFC 3339 time"))?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{v:?} is before 1970"))
}

/// `250ms`, `1.5s`, `900us`, `2m`, `1h`, `100ns`; a bare number is
/// nanoseconds.
pub fn parse_duration_ns(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{v:?} is not a duration like 250ms or 1.5s"))?;
    let mult = match unit.trim() {
        "" | "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        u => return Err(format!("unknown unit {u:?} in {v:?} (use ns, us, ms, s, m or h)")),
    };
    let ns = n * mult;
    if !ns.is_finite() || ns < 0.0 || ns > u64::MAX as f64 {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(ns.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ns("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_duration_ns("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration_ns("900us").unwrap(), 900_000);
        assert_eq!(parse_duration_ns("42").unwrap(), 42);
        assert!(parse_duration_ns("fast").is_err());
        assert!(parse_duration_ns("5 parsecs").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1731000000123456789").unwrap(), 1_731_000_000_123_456_789);
        assert_eq!(parse_time("2024-11-07T17:20:00Z").unwrap(), 1_731_000_000_000_000_000);
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn ranges_in_every_unit() {
        let p = Params::parse(Some("start=10&end=20&bad=x&ts=2024-11-07T17:20:00Z"));
        let r = p.range("start", "end", TimeUnit::Seconds).unwrap();
        assert_eq!((r.start_ns, r.end_ns), (Some(10_000_000_000), Some(20_000_000_000)));
        let r = p.range("start", "end", TimeUnit::Micros).unwrap();
        assert_eq!((r.start_ns, r.end_ns), (Some(10_000), Some(20_000)));
        assert_eq!(p.time_in("start", TimeUnit::Millis).unwrap(), Some(10_000_000));
        assert_eq!(p.time("ts").unwrap(), Some(1_731_000_000_000_000_000));
        assert!(p.range("end", "start", TimeUnit::NanosOrRfc3339).is_err());
        assert!(p.time_in("bad", TimeUnit::Seconds).is_err());
        assert_eq!(p.range("none", "end", TimeUnit::Seconds).unwrap().start_ns, None);
    }

    #[test]
    fn trace_ids() {
        assert_eq!(parse_trace_id("abc").unwrap().to_hex(), format!("{:0>32}", "abc"));
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
    }

    #[test]
    fn repeated_keys() {
        let p = Params::parse(Some("attr=a%3D1&attr=b=2&limit=5&service="));
        assert_eq!(p.all("attr").collect::<Vec<_>>(), vec!["a=1", "b=2"]);
        assert_eq!(p.get("service"), None);
        assert_eq!(p.limit(20, 3).unwrap(), 3);
    }
}
