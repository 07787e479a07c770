//! Trace summaries for search results: computed in storage, which also
//! keeps them per trace in each segment ([`skein_storage::summary`]).

pub use skein_storage::summary::{summarize, ServiceCount, TraceSummary};
