//! The OTLP wire mapping, in both directions and in one place:
//!
//! - [`decode`]: OTLP export requests to storage's model, with the
//!   per-record validation the OTLP spec asks for (used by the collector);
//! - [`encode`]: storage's model back to OTLP `ResourceSpans` (used by the
//!   query crate's Tempo API, whose traces are OTLP batches);
//! - [`json`]: OTLP/JSON bodies to OTLP messages, with the whole proto3
//!   JSON mapping (used by the collector's HTTP receiver).
//!
//! The collector and the query side never depend on each other; both
//! depend on this crate and on `skein-storage`, whose model is the one
//! vocabulary. The round trip model → OTLP → model is tested in [`encode`].

#![warn(missing_docs)]

pub mod decode;
pub mod encode;
pub mod json;

#[cfg(test)]
mod fuzz_tests;
