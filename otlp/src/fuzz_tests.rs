//! Property tests standing in for fuzzing in the normal test command (CI's
//! one toolchain is stable, and cargo-fuzz needs nightly; the optional
//! cargo-fuzz targets in `fuzz/` share this corpus). Each case takes a
//! real request from `otlp/fuzz-corpus/` (protobuf and OTLP/JSON, traces
//! and logs) and mutates it (truncations, byte flips, splices of another
//! request, insertions, deletions, repeats), then decodes it as both
//! signals and both encodings. What must hold: no panic; a refusal is an
//! error with a message; whatever decodes converts with every span or
//! record either kept or rejected with a reason, and survives a protobuf
//! round trip unchanged. The unmutated corpus also round-trips through
//! OTLP/JSON and, as the model, through `encode`.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use proptest::prelude::*;
use prost::Message;

use crate::decode::{self, Limits};
use crate::{encode, json};

/// The checked-in corpus: (file name, bytes).
const CORPUS: &[(&str, &[u8])] = &[
    ("trace.json", include_bytes!("../fuzz-corpus/trace.json")),
    ("trace-rich.json", include_bytes!("../fuzz-corpus/trace-rich.json")),
    ("logs.json", include_bytes!("../fuzz-corpus/logs.json")),
    ("trace.pb", include_bytes!("../fuzz-corpus/trace.pb")),
    ("trace-rich.pb", include_bytes!("../fuzz-corpus/trace-rich.pb")),
    ("logs.pb", include_bytes!("../fuzz-corpus/logs.pb")),
];

/// One change to a request's bytes; positions are fractions of its length
/// so that every mutation applies to any input.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(f64, u8),
    /// Replace from `at` with a piece of another corpus entry.
    Splice {
        at: f64,
        from: usize,
        start: f64,
        len: usize,
    },
    Insert(f64, Vec<u8>),
    Delete(f64, usize),
    Repeat(f64, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let f = 0.0..1.0f64;
    prop_oneof![
        f.clone().prop_map(Mutation::Truncate),
        (f.clone(), 1..=255u8).prop_map(|(a, b)| Mutation::Flip(a, b)),
        (f.clone(), 0..CORPUS.len(), f.clone(), 1..64usize)
            .prop_map(|(at, from, start, len)| Mutation::Splice { at, from, start, len }),
        (f.clone(), proptest::collection::vec(any::<u8>(), 1..8)).prop_map(|(a, b)| Mutation::Insert(a, b)),
        (f.clone(), 1..32usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (f, 1..32usize).prop_map(|(a, n)| Mutation::Repeat(a, n)),
    ]
}

fn at(len: usize, x: f64) -> usize {
    ((len as f64 * x) as usize).min(len)
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match m {
            Mutation::Truncate(x) => b.truncate(at(n, *x)),
            Mutation::Flip(x, v) if n > 0 => {
                let i = at(n - 1, *x);
                b[i] ^= v;
            }
            Mutation::Flip(..) => {}
            Mutation::Splice { at: x, from, start, len } => {
                let src = CORPUS[*from].1;
                let s = at(src.len(), *start);
                let piece = &src[s..(s + len).min(src.len())];
                let i = at(n, *x);
                let end = (i + piece.len()).min(n);
                b.splice(i..end, piece.iter().copied());
            }
            Mutation::Insert(x, bytes) => {
                let i = at(n, *x);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(x, k) => {
                let i = at(n, *x);
                b.drain(i..(i + k).min(n));
            }
            Mutation::Repeat(x, k) => {
                let i = at(n, *x);
                let piece = b[i..(i + k).min(n)].to_vec();
                b.splice(i..i, piece);
            }
        }
    }
    b
}

/// What must hold of any trace request that decoded.
fn check_traces(req: &ExportTraceServiceRequest) -> Result<(), TestCaseError> {
    let total: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
    let c = decode::spans_within(req, &Limits::default());
    prop_assert_eq!(c.records.len() + c.rejected as usize, total);
    prop_assert_eq!(c.rejected > 0, c.error.as_ref().is_some_and(|e| !e.is_empty()));
    // Compared as bytes: a NaN double is not equal to itself.
    let wire = req.encode_to_vec();
    let back =
        ExportTraceServiceRequest::decode(&wire[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.encode_to_vec(), wire);
    Ok(())
}

/// What must hold of any logs request that decoded.
fn check_logs(req: &ExportLogsServiceRequest) -> Result<(), TestCaseError> {
    let total: usize =
        req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
    let c = decode::logs_within(req, &Limits::default());
    prop_assert_eq!(c.records.len() + c.rejected as usize, total);
    prop_assert_eq!(c.rejected > 0, c.error.as_ref().is_some_and(|e| !e.is_empty()));
    let wire = req.encode_to_vec();
    let back = ExportLogsServiceRequest::decode(&wire[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(back.encode_to_vec(), wire);
    Ok(())
}

/// Decodes `b` every way a receiver may: protobuf and OTLP/JSON, as
/// traces and as logs.
fn decode_every_way(b: &[u8]) -> Result<(), TestCaseError> {
    match ExportTraceServiceRequest::decode(b) {
        Ok(r) => check_traces(&r)?,
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    match ExportLogsServiceRequest::decode(b) {
        Ok(r) => check_logs(&r)?,
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    match json::decode::<ExportTraceServiceRequest>(b) {
        Ok(r) => check_traces(&r)?,
        Err(e) => prop_assert!(!e.0.is_empty()),
    }
    match json::decode::<ExportLogsServiceRequest>(b) {
        Ok(r) => check_logs(&r)?,
        Err(e) => prop_assert!(!e.0.is_empty()),
    }
    Ok(())
}

proptest! {
    // Bounded so the normal test command stays quick; a longer run:
    // PROPTEST_CASES=100000 cargo test -p skein-otlp fuzz_tests
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn mutated_requests_never_panic_and_decode_consistently(
        seed in 0..CORPUS.len(),
        muts in proptest::collection::vec(mutation(), 0..5),
    ) {
        decode_every_way(&mutate(CORPUS[seed].1.to_vec(), &muts))?;
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_every_way(&bytes)?;
    }
}

/// The corpus as it is: every entry decodes, the JSON ones as what their
/// protobuf twins hold, and both round-trip (JSON → message → JSON, and
/// message → model → OTLP → model).
#[test]
fn the_corpus_is_valid_and_round_trips() {
    for (name, b) in CORPUS {
        decode_every_way(b).unwrap();
        let Some(stem) = name.strip_suffix(".json") else { continue };
        let pb = CORPUS.iter().find(|c| c.0 == format!("{stem}.pb")).unwrap().1;
        if stem.starts_with("logs") {
            let m: ExportLogsServiceRequest = json::decode(b).unwrap();
            assert_eq!(m.encode_to_vec(), pb, "{name}");
            let again: ExportLogsServiceRequest =
                json::decode(serde_json::to_string(&m).unwrap().as_bytes()).unwrap();
            assert_eq!(again.encode_to_vec(), pb, "{name} through JSON again");
        } else {
            let m: ExportTraceServiceRequest = json::decode(b).unwrap();
            assert_eq!(m.encode_to_vec(), pb, "{name}");
            let again: ExportTraceServiceRequest =
                json::decode(serde_json::to_string(&m).unwrap().as_bytes()).unwrap();
            // opentelemetry-proto's serde derive writes a NaN double as
            // `null` (proto3 JSON wants "NaN"), so that value alone does
            // not survive; everything else must.
            let text = String::from_utf8_lossy(b);
            if !text.contains("\"NaN\"") {
                assert_eq!(again.encode_to_vec(), pb, "{name} through JSON again");
            } else {
                assert_eq!(again.encode_to_vec().len() + 9, pb.len(), "{name}: only the NaN is lost");
            }
            let c = decode::spans(&m);
            assert_eq!(c.rejected, 0, "{name}");
            let back =
                decode::spans(&ExportTraceServiceRequest { resource_spans: encode::batches(&c.records) });
            assert_eq!(format!("{:?}", back.records), format!("{:?}", c.records), "{name} through the model");
        }
    }
}

/// Writes the protobuf twins of the JSON corpus entries (run after adding
/// or changing one: `cargo test -p skein-otlp regenerate_corpus -- --ignored`).
#[test]
#[ignore = "writes otlp/fuzz-corpus"]
fn regenerate_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    for stem in ["trace", "trace-rich"] {
        let b = std::fs::read(dir.join(format!("{stem}.json"))).unwrap();
        let m: ExportTraceServiceRequest = json::decode(&b).unwrap();
        std::fs::write(dir.join(format!("{stem}.pb")), m.encode_to_vec()).unwrap();
    }
    let b = std::fs::read(dir.join("logs.json")).unwrap();
    let m: ExportLogsServiceRequest = json::decode(&b).unwrap();
    std::fs::write(dir.join("logs.pb"), m.encode_to_vec()).unwrap();
}
