//! Query-string parsing shared by every endpoint: times, durations, limits.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::ApiError;

/// The query string as ordered pairs; keys may repeat (`attr`).
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
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

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0.iter().filter(move |(k, v)| k == key && !v.is_empty()).map(|(_, v)| v.as_str())
    }

    pub fn time(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key).map(|v| parse_time(v).map_err(|e| ApiError::bad(format!("{key}: {e}")))).transpose()
    }

    pub fn duration(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| parse_duration_ns(v).map_err(|e| ApiError::bad(format!("{key}: {e}"))))
            .transpose()
    }

    /// `limit`, defaulting to `default` and capped at `max`.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default.min(max)),
            Some(v) => {
                let n: usize = v
                    .parse()
                    .map_err(|_| ApiError::bad(format!("limit: {v:?} is not a positive integer")))?;
                if n == 0 {
                    return Err(ApiError::bad("limit: must be at least 1"));
                }
                Ok(n.min(max))
            }
        }
    }
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
    fn repeated_keys() {
        let p = Params::parse(Some("attr=a%3D1&attr=b=2&limit=5&service="));
        assert_eq!(p.all("attr").collect::<Vec<_>>(), vec!["a=1", "b=2"]);
        assert_eq!(p.get("service"), None);
        assert_eq!(p.limit(20, 3).unwrap(), 3);
    }
}
