//! Reading a workload directory written by `shared/workload/gen_workload.py`:
//! the request files to send, the search probes taken from their spans, and
//! the ground truth (`truth.jsonl`) the query timings check counts against.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// One request file, kept as its encoded bytes so sending it costs no
/// re-encoding.
pub(crate) struct Item {
    /// A `traces-*.pb` file (else `logs-*.pb`).
    pub(crate) traces: bool,
    /// The encoded `Export*ServiceRequest`.
    pub(crate) body: Vec<u8>,
    /// Spans or log records in it.
    pub(crate) records: u64,
}

/// A trace search that at least the span it was taken from matches:
/// service, one attribute of the span, and a minimum duration rounded down
/// to a round figure.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Probe {
    pub(crate) service: String,
    pub(crate) key: String,
    pub(crate) value: String,
    /// A humantime duration ("20ms").
    pub(crate) min_duration: String,
}

/// Span attributes a user filters on (low cardinality, not IDs or URLs).
const PROBE_KEYS: &[&str] = &[
    "rpc.method",
    "http.route",
    "db.operation.name",
    "http.response.status_code",
    "db.system",
    "http.request.method",
    "messaging.operation.type",
    "app.payment.card_type",
    "app.loyalty.level",
];

/// Minimum durations a probe uses: the largest one not above the span's.
const THRESHOLDS: &[(u64, &str)] = &[
    (1_000_000_000, "1s"),
    (500_000_000, "500ms"),
    (200_000_000, "200ms"),
    (100_000_000, "100ms"),
    (50_000_000, "50ms"),
    (20_000_000, "20ms"),
    (10_000_000, "10ms"),
    (5_000_000, "5ms"),
    (2_000_000, "2ms"),
    (1_000_000, "1ms"),
    (100_000, "100us"),
];

/// Probes from the spans of one decoded request (every 7th span).
fn probes_of(r: &ExportTraceServiceRequest, out: &mut BTreeSet<Probe>) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    for rs in &r.resource_spans {
        let service =
            rs.resource.iter().flat_map(|r| &r.attributes).find(|a| a.key == "service.name").and_then(|a| {
                match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                }
            });
        let Some(service) = service else { continue };
        for sp in rs.scope_spans.iter().flat_map(|s| &s.spans).step_by(7) {
            let dur = sp.end_time_unix_nano.saturating_sub(sp.start_time_unix_nano);
            let Some(&(_, min_duration)) = THRESHOLDS.iter().find(|(t, _)| dur >= *t) else { continue };
            for a in &sp.attributes {
                if !PROBE_KEYS.contains(&a.key.as_str()) {
                    continue;
                }
                let value = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => s.clone(),
                    Some(Value::IntValue(i)) => i.to_string(),
                    _ => continue,
                };
                out.insert(Probe {
                    service: service.clone(),
                    key: a.key.clone(),
                    value,
                    min_duration: min_duration.to_string(),
                });
            }
        }
    }
}

/// The requests to send, and trace-search probes from every 50th trace
/// request.
pub(crate) fn load(dir: &Path, logs: bool) -> Result<(Vec<Item>, Vec<Probe>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pb"))
        .collect();
    names.sort();
    let mut items = Vec::new();
    let mut probes = BTreeSet::new();
    let mut trace_files = 0usize;
    // Interleave as the generator numbered them: traces-00001, logs-00001, ...
    names.sort_by_key(|p| {
        let n = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        let num = n.rsplit('-').next().unwrap_or_default().to_string();
        (num, n)
    });
    for p in names {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let traces = name.starts_with("traces-");
        let wanted = traces || (logs && name.starts_with("logs-"));
        if !wanted {
            continue;
        }
        let body = std::fs::read(&p)?;
        let records = if traces {
            let r = ExportTraceServiceRequest::decode(&body[..])?;
            if trace_files.is_multiple_of(50) {
                probes_of(&r, &mut probes);
            }
            trace_files += 1;
            r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
        } else {
            let r = ExportLogsServiceRequest::decode(&body[..])?;
            r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len() as u64).sum()
        };
        items.push(Item { traces, body, records });
    }
    if items.is_empty() {
        bail!("no traces-*.pb / logs-*.pb files in {}", dir.display());
    }
    Ok((items, probes.into_iter().collect()))
}

/// The probes `load` would find, without loading the workload.
pub(crate) fn probes_only(dir: &Path) -> Result<Vec<Probe>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            n.starts_with("traces-") && n.ends_with(".pb")
        })
        .collect();
    names.sort();
    let mut probes = BTreeSet::new();
    for p in names.iter().step_by(50) {
        probes_of(&ExportTraceServiceRequest::decode(&std::fs::read(p)?[..])?, &mut probes);
    }
    Ok(probes.into_iter().collect())
}

/// One trace of `truth.jsonl`.
pub(crate) struct Truth {
    /// Hex trace ID.
    pub(crate) id: String,
    pub(crate) spans: usize,
    pub(crate) logs: usize,
}

pub(crate) fn read_truth(data: &Path) -> Result<Vec<Truth>> {
    let truth = std::fs::read_to_string(data.join("truth.jsonl"))?;
    let out: Vec<Truth> = truth
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(Truth {
                id: v["trace_id"].as_str()?.to_string(),
                spans: v["span_count"].as_u64()? as usize,
                logs: v["log_count"].as_u64()? as usize,
            })
        })
        .collect();
    if out.is_empty() {
        bail!("no traces in truth.jsonl");
    }
    Ok(out)
}
