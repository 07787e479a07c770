//! Figures the report prints: percentiles, and the server's CPU time and
//! peak memory read from `/proc`.

/// CPU seconds (user + system) and peak RSS in bytes of a process; `None`
/// once it has exited (or off Linux).
pub(crate) fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line (proc(5)).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Some((ticks / 100.0, hwm))
}

/// The `q` quantile (0..=1) of ascending `sorted`, nearest rank; 0 when
/// empty.
pub(crate) fn pct(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_pct_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(pct(&v, 0.5), 50);
        assert_eq!(pct(&v, 0.99), 99);
        assert_eq!(pct(&v, 1.0), 100);
        assert_eq!(pct(&v, 0.0), 1);
        assert_eq!(pct(&[], 0.5), 0);
    }

    #[test]
    fn test_proc_usage_of_self() {
        let (cpu, rss) = proc_usage(std::process::id()).expect("this process is in /proc");
        assert!(cpu >= 0.0);
        assert!(rss > 0);
    }
}
