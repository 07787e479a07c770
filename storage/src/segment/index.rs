//! The segment's tantivy indexes: building them while a segment is
//! written, and searching spans (service, operation, attributes, duration,
//! status, start time) and log records (words, service, severity, time).

use std::collections::HashMap;
use std::fs;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, EmptyQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{
    DocId, Index, IndexReader, IndexWriter, Order, Score, SegmentOrdinal, SegmentReader, TantivyDocument,
    Term,
};

use super::layout::{
    fast, log_index_schema, span_index_schema, LogFields, SpanFields, TraceIndexEntry, LOG_INDEX_DIR,
    SPAN_INDEX_DIR, TOKENIZER,
};
use super::summaries::{SummaryBuilder, SUMMARIES_FILE};
use super::{Segment, SegmentConfig};
use crate::codec;
use crate::filter::{analyzer, log_text, tokenize, LogFilter, SpanFilter, StatusFilter};
use crate::model::{AttrValue, LogRecord, Resource, Span, TraceId};
use crate::Result;

/// Both indexes of a segment being written, and its distinct resources.
pub(crate) struct IndexBuilder {
    spans: IndexWriter<TantivyDocument>,
    span_fields: SpanFields,
    logs: IndexWriter<TantivyDocument>,
    log_fields: LogFields,
    /// Service name and encoded attributes of each resource, in ordinal
    /// order (resources.bin).
    resources: Vec<(String, Vec<u8>)>,
    resource_ords: HashMap<(String, Vec<u8>), u64>,
    /// The last span's resource and its ordinal: consecutive spans usually
    /// share one `Arc<Resource>`.
    last_resource: Option<(*const Resource, u64)>,
    analyzer: TextAnalyzer,
    words: Vec<String>,
    /// The `key=value` term being built, reused across attributes.
    term: String,
    /// Per trace-ID index entry, its summary (summaries.bin).
    summaries: SummaryBuilder,
    dir: PathBuf,
}

impl std::fmt::Debug for IndexBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexBuilder").field("resources", &self.resources.len()).finish()
    }
}

impl IndexBuilder {
    /// Creates both index directories under `dir`.
    pub(crate) fn create(dir: &Path, cfg: &SegmentConfig) -> Result<IndexBuilder> {
        // tantivy refuses a writer heap under 15 MB.
        let heap = cfg.index_heap_bytes.max(15_000_000);
        let (sschema, span_fields) = span_index_schema();
        let p = dir.join(SPAN_INDEX_DIR);
        fs::create_dir_all(&p)?;
        let spans = new_index(&p, sschema)?.writer_with_num_threads(1, heap)?;
        let (lschema, log_fields) = log_index_schema();
        let p = dir.join(LOG_INDEX_DIR);
        fs::create_dir_all(&p)?;
        let lidx = new_index(&p, lschema)?;
        lidx.tokenizers().register(TOKENIZER, analyzer());
        let logs = lidx.writer_with_num_threads(1, heap)?;
        Ok(IndexBuilder {
            spans,
            span_fields,
            logs,
            log_fields,
            resources: Vec::new(),
            resource_ords: HashMap::new(),
            last_resource: None,
            analyzer: analyzer(),
            words: Vec::new(),
            term: String::new(),
            summaries: SummaryBuilder::default(),
            dir: dir.to_path_buf(),
        })
    }

    /// Records the summary of the next trace-ID index entry's trace from
    /// its spans in this segment (each span once; none for a trace with
    /// logs only).
    pub(crate) fn add_trace(&mut self, spans: &[Span]) {
        self.summaries.add(spans);
    }

    /// Indexes span `s`, stored at `row` of spans.parquet.
    pub(crate) fn add_span(&mut self, s: &Span, row: u32) -> Result<()> {
        let f = self.span_fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.row, u64::from(row));
        doc.add_text(f.name, &s.name);
        let key = Arc::as_ptr(&s.resource);
        let ord = match self.last_resource {
            Some((k, ord)) if k == key => ord,
            _ => {
                // Keyed by the service name too: it is what a service
                // condition is checked against.
                let enc = (s.service_name().to_string(), codec::encode_attrs(&s.resource.attributes));
                let next = self.resources.len() as u64;
                let ord = *self.resource_ords.entry(enc.clone()).or_insert_with(|| {
                    self.resources.push(enc);
                    next
                });
                self.last_resource = Some((key, ord));
                ord
            }
        };
        doc.add_u64(f.resource, ord);
        for (k, v) in &s.attributes {
            match v {
                // One term per scalar element, so a condition on the key
                // finds the array as `AttrValue::matches_search_text` does.
                AttrValue::Array(a) => {
                    for e in a {
                        if search_term(&mut self.term, k, e) {
                            doc.add_text(f.attr, &self.term);
                        }
                    }
                }
                v => {
                    if search_term(&mut self.term, k, v) {
                        doc.add_text(f.attr, &self.term);
                    }
                }
            }
        }
        doc.add_u64(f.status, u64::from(s.status_code));
        doc.add_u64(f.duration, s.duration_ns());
        doc.add_u64(f.start, s.start_time_unix_nano);
        self.spans.add_document(doc)?;
        Ok(())
    }

    /// Indexes log record `l`, stored at `row` of logs.parquet.
    pub(crate) fn add_log(&mut self, l: &LogRecord, row: u32) -> Result<()> {
        let f = self.log_fields;
        let mut doc = TantivyDocument::default();
        self.words.clear();
        let (an, words) = (&mut self.analyzer, &mut self.words);
        log_text(l, |s| tokenize(an, s, words));
        self.words.sort_unstable();
        self.words.dedup();
        for w in &self.words {
            doc.add_text(f.text, w);
        }
        doc.add_text(f.service, l.service_name());
        doc.add_u64(f.severity, l.severity_number.max(0) as u64);
        doc.add_u64(f.time, l.effective_time());
        doc.add_u64(f.row, u64::from(row));
        self.logs.add_document(doc)?;
        Ok(())
    }

    /// Commits both indexes and writes summaries.bin (not fsynced: the
    /// caller syncs the directory), and returns the distinct resources in
    /// ordinal order.
    pub(crate) fn commit(mut self) -> Result<Vec<(String, Vec<u8>)>> {
        fs::write(self.dir.join(SUMMARIES_FILE), self.summaries.encode()?)?;
        self.spans.commit()?;
        self.spans.wait_merging_threads()?;
        self.logs.commit()?;
        self.logs.wait_merging_threads()?;
        Ok(self.resources)
    }
}

/// Creates an index in `dir`. Nothing is stored, yet tantivy keeps an
/// (empty) stored document per document, about 2 bytes each whatever the
/// block size (a 1 MiB block measured larger than the default); compressing
/// on the writer's own thread spares a thread per index.
fn new_index(dir: &Path, schema: tantivy::schema::Schema) -> Result<Index> {
    let settings = tantivy::IndexSettings {
        docstore_compression: tantivy::store::Compressor::Zstd(tantivy::store::ZstdCompressor::default()),
        docstore_compress_dedicated_thread: false,
        ..Default::default()
    };
    Ok(Index::builder().schema(schema).settings(settings).create_in_dir(dir)?)
}

/// Writes the `key=value` term of attribute `k` = `v` into `out` (the text
/// of [`crate::model::AttrValue::as_search_text`], without its
/// allocation): `false`, leaving `out` unspecified, for a value that is
/// not searchable.
fn search_term(out: &mut String, k: &str, v: &AttrValue) -> bool {
    use std::fmt::Write;
    out.clear();
    out.push_str(k);
    out.push('=');
    match v {
        AttrValue::Str(s) => out.push_str(s),
        AttrValue::Int(i) => {
            let _ = write!(out, "{i}");
        }
        AttrValue::Double(d) => {
            let _ = write!(out, "{d}");
        }
        AttrValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        _ => return false,
    }
    true
}

/// Opens a segment's index for reading, with the log analyzer registered.
pub(crate) fn open_index(dir: &Path) -> Result<IndexReader> {
    let index = Index::open_in_dir(dir)?;
    index.tokenizers().register(TOKENIZER, analyzer());
    Ok(index.reader_builder().reload_policy(tantivy::ReloadPolicy::Manual).try_into()?)
}

/// Matching spans a segment's trace search ranks by start time at most
/// before it visits every match instead.
const SEARCH_TOP_SPANS_MAX: usize = 1 << 16;

fn term(field: tantivy::schema::Field, v: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(Term::from_field_text(field, v), IndexRecordOption::Basic))
}

fn u64_range(field: tantivy::schema::Field, lo: Option<u64>, hi: Option<u64>) -> Box<dyn Query> {
    let lo = lo.map_or(Bound::Unbounded, |v| Bound::Included(Term::from_field_u64(field, v)));
    let hi = hi.map_or(Bound::Unbounded, |v| Bound::Included(Term::from_field_u64(field, v)));
    Box::new(RangeQuery::new(lo, hi))
}

fn all_of(must: Vec<(Occur, Box<dyn Query>)>) -> Box<dyn Query> {
    if must.is_empty() {
        Box::new(AllQuery)
    } else {
        Box::new(BooleanQuery::new(must))
    }
}

impl Segment {
    /// Walks the span index's `attr` term dictionary (terms are
    /// `key=value` of scalar span attributes, sorted) from the first term
    /// starting with `prefix`, calling `f` with each term that starts with
    /// it until `f` returns `false`. Callers bound the walk through `f`.
    /// Errors: an unreadable index ([`crate::Error`] from tantivy or I/O).
    pub fn for_each_attr_term(&self, prefix: &str, mut f: impl FnMut(&str) -> bool) -> Result<()> {
        let (_, sf) = span_index_schema();
        let searcher = self.span_reader.searcher();
        for sr in searcher.segment_readers() {
            let inv = sr.inverted_index(sf.attr)?;
            let mut stream = inv.terms().range().ge(prefix.as_bytes()).into_stream()?;
            while stream.advance() {
                let Ok(term) = std::str::from_utf8(stream.key()) else { continue };
                if !term.starts_with(prefix) || !f(term) {
                    break;
                }
            }
        }
        Ok(())
    }

    fn span_query(&self, f: &SpanFilter) -> Box<dyn Query> {
        let (_, sf) = span_index_schema();
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let resource = |ord: usize| -> (Occur, Box<dyn Query>) {
            let t = Term::from_field_u64(sf.resource, ord as u64);
            (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::Basic)))
        };
        if let Some(s) = &f.service {
            let any: Vec<_> = (0..self.resource_services.len())
                .filter(|i| self.resource_services[*i] == *s)
                .map(resource)
                .collect();
            if any.is_empty() {
                return Box::new(EmptyQuery);
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if let Some(s) = &f.operation {
            must.push((Occur::Must, term(sf.name, s)));
        }
        for (k, v) in &f.attrs {
            // The span's own attribute, or its resource's.
            let mut any: Vec<(Occur, Box<dyn Query>)> =
                vec![(Occur::Should, term(sf.attr, &format!("{k}={v}")))];
            for (ord, attrs) in self.resources.iter().enumerate() {
                if attrs.iter().any(|(ak, av)| ak == k && av.matches_search_text(v)) {
                    any.push(resource(ord));
                }
            }
            must.push((Occur::Must, Box::new(BooleanQuery::new(any))));
        }
        if f.min_duration_ns.is_some() || f.max_duration_ns.is_some() {
            must.push((Occur::Must, u64_range(sf.duration, f.min_duration_ns, f.max_duration_ns)));
        }
        match f.status {
            Some(StatusFilter::Error) => must.push((Occur::Must, u64_range(sf.status, Some(2), Some(2)))),
            Some(StatusFilter::Ok) => must.push((Occur::Must, u64_range(sf.status, Some(0), Some(1)))),
            None => {}
        }
        if f.start_ns.is_some() || f.end_ns.is_some() {
            must.push((Occur::Must, u64_range(sf.start, f.start_ns, f.end_ns)));
        }
        all_of(must)
    }

    /// Whether a span of this segment may match `f`, from what the segment
    /// keeps in memory and the attribute term dictionary alone (no
    /// postings, no Parquet): `false` when its time range, services,
    /// operations or error counts rule every span out, or when an
    /// attribute condition's term is in no span's attributes and no
    /// resource meets it. A search that matches nothing then costs a few
    /// lookups per segment.
    fn may_match(&self, f: &SpanFilter) -> Result<bool> {
        let m = &self.meta;
        if !self.overlaps(f.start_ns, f.end_ns) {
            return Ok(false);
        }
        let services: Vec<&super::ServiceStat> =
            m.services.iter().filter(|s| f.service.as_ref().is_none_or(|n| *n == s.name)).collect();
        if services.is_empty() {
            return Ok(false);
        }
        if f.status == Some(StatusFilter::Error) && services.iter().all(|s| s.error_count == 0) {
            return Ok(false);
        }
        if let Some(op) = &f.operation {
            if !m
                .operations
                .iter()
                .any(|o| o.name == *op && f.service.as_ref().is_none_or(|s| o.service == *s))
            {
                return Ok(false);
            }
        }
        let (_, sf) = span_index_schema();
        let searcher = self.span_reader.searcher();
        let mut text = String::new();
        for (k, v) in &f.attrs {
            let on_resource = self
                .resources
                .iter()
                .any(|attrs| attrs.iter().any(|(ak, av)| ak == k && av.matches_search_text(v)));
            if on_resource {
                continue;
            }
            text.clear();
            text.push_str(k);
            text.push('=');
            text.push_str(v);
            let mut found = false;
            for sr in searcher.segment_readers() {
                if sr.inverted_index(sf.attr)?.terms().get(text.as_bytes())?.is_some() {
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Traces with at least one span matching `f`, each with the latest
    /// start time (Unix ns) among its matching spans; at most `limit` (at
    /// least 1), latest first. Reads the index only, no Parquet.
    pub fn search_spans(&self, f: &SpanFilter, limit: usize) -> Result<Vec<(TraceId, u64)>> {
        if !self.may_match(f)? {
            return Ok(Vec::new());
        }
        let q = self.span_query(f);
        let limit = limit.max(1);
        // The newest matching spans first, through tantivy's top-k by a
        // fast field (a bounded heap, no per-match allocation); several
        // may belong to one trace, so ask for more spans than traces, and
        // more again when that was not enough.
        let mut k = limit * 4;
        while k <= SEARCH_TOP_SPANS_MAX {
            let (out, exhausted) = self.top_traces(q.as_ref(), fast::START, k, limit)?;
            if out.len() == limit || exhausted {
                return Ok(out);
            }
            k *= 8;
        }
        // Many matching spans in few traces: visit every match.
        let searcher = self.span_reader.searcher();
        let hits = searcher.search(&q, &LatestTraces { limit, traces: self.trace_index.clone() })?;
        Ok(hits)
    }

    /// Which traces of the trace-ID index have a span matching `f` here:
    /// bit `i` (of word `i / 64`) for entry `i`. Reads the index only; a
    /// superset of the exact answer only where the index is (an attribute
    /// with `=` in its key or value).
    pub fn traces_matching(&self, f: &SpanFilter) -> Result<Vec<u64>> {
        let words = self.trace_index.len().div_ceil(64);
        if !self.may_match(f)? {
            return Ok(vec![0; words]);
        }
        let q = self.span_query(f);
        let searcher = self.span_reader.searcher();
        Ok(searcher.search(&q, &TraceBits { words, traces: self.trace_index.clone() })?)
    }

    /// Traces with at least one span matching `f`, each with the longest
    /// duration (ns) among its matching spans; at most `limit` (at least
    /// 1), longest first. Reads the index only, no Parquet: a top-k by the
    /// duration fast field, asking for more spans while several belong to
    /// one trace. When more than `SEARCH_TOP_SPANS_MAX` spans of fewer
    /// than `limit` traces match, the traces found among those spans are
    /// returned.
    pub fn longest_spans(&self, f: &SpanFilter, limit: usize) -> Result<Vec<(TraceId, u64)>> {
        if !self.may_match(f)? {
            return Ok(Vec::new());
        }
        let q = self.span_query(f);
        let limit = limit.max(1);
        let mut k = limit * 4;
        loop {
            let (out, exhausted) = self.top_traces(q.as_ref(), fast::DURATION, k, limit)?;
            if out.len() == limit || exhausted || k >= SEARCH_TOP_SPANS_MAX {
                return Ok(out);
            }
            k = (k * 8).min(SEARCH_TOP_SPANS_MAX);
        }
    }

    /// The first `limit` distinct traces among the top `k` spans matching
    /// `q` by the u64 fast field `field` (largest first), each with its
    /// span's value of `field`, and whether fewer than `k` spans matched
    /// (then no more are to be found).
    fn top_traces(
        &self,
        q: &dyn Query,
        field: &str,
        k: usize,
        limit: usize,
    ) -> Result<(Vec<(TraceId, u64)>, bool)> {
        let searcher = self.span_reader.searcher();
        let top =
            searcher.search(q, &TopDocs::with_limit(k).order_by_fast_field::<u64>(field, Order::Desc))?;
        let exhausted = top.len() < k;
        let mut out: Vec<(TraceId, u64)> = Vec::with_capacity(limit);
        let mut seen = std::collections::HashSet::with_capacity(limit);
        let mut rows: HashMap<SegmentOrdinal, tantivy::columnar::Column<u64>> = HashMap::new();
        for (value, addr) in top {
            let col = match rows.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(searcher.segment_reader(addr.segment_ord).fast_fields().u64(fast::ROW)?)
                }
            };
            let (Some(value), Some(row)) = (value, col.first(addr.doc_id)) else { continue };
            let Some(entry) = trace_of_span_row(&self.trace_index, row) else { continue };
            if seen.insert(entry.trace_id) {
                out.push((entry.trace_id, value));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok((out, exhausted))
    }

    /// The newest `limit` (at least 1) log records matching `f` (its trace
    /// ID ignored): their effective times (Unix ns) and rows in
    /// logs.parquet, newest first, from the index alone.
    pub fn search_log_rows(&self, f: &LogFilter, limit: usize) -> Result<Vec<(u64, usize)>> {
        let q = log_query(f);
        let searcher = self.log_reader.searcher();
        let top = searcher.search(
            &q,
            &TopDocs::with_limit(limit.max(1)).order_by_fast_field::<u64>(fast::TIME, Order::Desc),
        )?;
        let mut rows = Vec::with_capacity(top.len());
        for (time, addr) in top {
            let seg = searcher.segment_reader(addr.segment_ord);
            let col = seg.fast_fields().u64(fast::ROW)?;
            if let (Some(time), Some(r)) = (time, col.first(addr.doc_id)) {
                rows.push((time, r as usize));
            }
        }
        Ok(rows)
    }

    /// The newest `limit` log records matching `f`, newest first. With a
    /// trace ID the trace-ID index finds the rows and `f` is checked in
    /// memory; otherwise the log index does.
    pub fn search_logs(&self, f: &LogFilter, limit: usize) -> Result<Vec<LogRecord>> {
        if let Some(tid) = &f.trace_id {
            // The trace-ID index is exact and cheaper than the text index.
            let Some(e) = self.find(tid).copied() else { return Ok(Vec::new()) };
            let logs = self.read_logs(vec![e.log_rows()])?;
            let mut an = analyzer();
            let mut logs: Vec<_> = logs.into_iter().filter(|l| f.matches(l, &mut an)).collect();
            logs.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
            logs.truncate(limit);
            return Ok(logs);
        }
        let mut rows: Vec<usize> = self.search_log_rows(f, limit)?.into_iter().map(|r| r.1).collect();
        rows.sort_unstable();
        let mut logs = self.read_logs(rows.iter().map(|r| *r..*r + 1).collect())?;
        logs.sort_by_key(|l| std::cmp::Reverse(l.effective_time()));
        Ok(logs)
    }

    /// Counts logs matching `f` (its trace ID ignored) per `step`-wide
    /// bucket of effective time (ns, at least 1), keyed by bucket start (a
    /// multiple of `step`).
    pub fn count_logs(&self, f: &LogFilter, step: u64) -> Result<HashMap<u64, u64>> {
        let q = log_query(f);
        let searcher = self.log_reader.searcher();
        Ok(searcher.search(&q, &TimeHistogram { step: step.max(1) })?)
    }
}

fn log_query(f: &LogFilter) -> Box<dyn Query> {
    let (_, lf) = log_index_schema();
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for w in &f.words {
        must.push((Occur::Must, term(lf.text, w)));
    }
    if let Some(s) = &f.service {
        // An equality on the fast field (the service is not indexed).
        let t = || Bound::Included(Term::from_field_text(lf.service, s));
        must.push((Occur::Must, Box::new(RangeQuery::new(t(), t()))));
    }
    if let Some(m) = f.min_severity {
        must.push((Occur::Must, u64_range(lf.severity, Some(m.max(0) as u64), None)));
    }
    if f.start_ns.is_some() || f.end_ns.is_some() {
        must.push((Occur::Must, u64_range(lf.time, f.start_ns, f.end_ns)));
    }
    all_of(must)
}

/// The trace-ID index entry of the trace holding span row `row`: rows are
/// sorted by trace, so it is the last entry starting at or before the row.
fn trace_of_span_row(index: &[TraceIndexEntry], row: u64) -> Option<&TraceIndexEntry> {
    let i = index.partition_point(|e| u64::from(e.span_row) <= row);
    i.checked_sub(1).and_then(|i| index.get(i))
}

/// Collects, per trace, the latest start time among matching spans, and
/// keeps the `limit` latest traces. Pruning below the current k-th latest is
/// safe because a trace's value only grows as more of its spans are seen.
struct LatestTraces {
    limit: usize,
    traces: Arc<Vec<TraceIndexEntry>>,
}

struct LatestTracesSegment {
    limit: usize,
    traces: Arc<Vec<TraceIndexEntry>>,
    row: tantivy::columnar::Column<u64>,
    start: tantivy::columnar::Column<u64>,
    best: HashMap<TraceId, u64>,
}

fn prune(best: &mut HashMap<TraceId, u64>, limit: usize) {
    if best.len() <= limit {
        return;
    }
    let mut v: Vec<u64> = best.values().copied().collect();
    v.select_nth_unstable_by(limit - 1, |a, b| b.cmp(a));
    let kth = v[limit - 1];
    best.retain(|_, s| *s >= kth);
}

impl Collector for LatestTraces {
    type Fruit = Vec<(TraceId, u64)>;
    type Child = LatestTracesSegment;

    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<Self::Child> {
        let ff = seg.fast_fields();
        Ok(LatestTracesSegment {
            limit: self.limit,
            traces: self.traces.clone(),
            row: ff.u64(fast::ROW)?,
            start: ff.u64(fast::START)?,
            best: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<TraceId, u64>>) -> tantivy::Result<Self::Fruit> {
        let mut all: HashMap<TraceId, u64> = HashMap::new();
        for f in fruits {
            for (k, v) in f {
                let e = all.entry(k).or_insert(v);
                *e = (*e).max(v);
            }
        }
        let mut v: Vec<_> = all.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(self.limit);
        Ok(v)
    }
}

impl SegmentCollector for LatestTracesSegment {
    type Fruit = HashMap<TraceId, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let (Some(row), Some(start)) = (self.row.first(doc), self.start.first(doc)) else {
            return;
        };
        let Some(entry) = trace_of_span_row(&self.traces, row) else { return };
        let e = self.best.entry(entry.trace_id).or_insert(start);
        *e = (*e).max(start);
        if self.best.len() > self.limit * 4 + 1024 {
            prune(&mut self.best, self.limit);
        }
    }

    fn harvest(mut self) -> Self::Fruit {
        prune(&mut self.best, self.limit);
        self.best
    }
}

/// Sets, per matching document, the bit of its trace's entry in the
/// trace-ID index.
struct TraceBits {
    words: usize,
    traces: Arc<Vec<TraceIndexEntry>>,
}

struct TraceBitsSegment {
    traces: Arc<Vec<TraceIndexEntry>>,
    row: tantivy::columnar::Column<u64>,
    bits: Vec<u64>,
}

impl Collector for TraceBits {
    type Fruit = Vec<u64>;
    type Child = TraceBitsSegment;

    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(TraceBitsSegment {
            traces: self.traces.clone(),
            row: seg.fast_fields().u64(fast::ROW)?,
            bits: vec![0; self.words],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Self::Fruit> {
        let mut all = vec![0; self.words];
        for f in fruits {
            all.iter_mut().zip(f).for_each(|(a, b)| *a |= b);
        }
        Ok(all)
    }
}

impl SegmentCollector for TraceBitsSegment {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        let Some(row) = self.row.first(doc) else { return };
        let i = self.traces.partition_point(|e| u64::from(e.span_row) <= row);
        if let Some(i) = i.checked_sub(1) {
            if let Some(w) = self.bits.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.bits
    }
}

/// Counts matching documents per time bucket.
struct TimeHistogram {
    step: u64,
}

struct TimeHistogramSegment {
    step: u64,
    time: tantivy::columnar::Column<u64>,
    counts: HashMap<u64, u64>,
}

impl Collector for TimeHistogram {
    type Fruit = HashMap<u64, u64>;
    type Child = TimeHistogramSegment;

    fn for_segment(&self, _: SegmentOrdinal, seg: &SegmentReader) -> tantivy::Result<Self::Child> {
        Ok(TimeHistogramSegment {
            step: self.step,
            time: seg.fast_fields().u64(fast::TIME)?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<u64, u64>>) -> tantivy::Result<Self::Fruit> {
        let mut all = HashMap::new();
        for f in fruits {
            for (k, v) in f {
                *all.entry(k).or_insert(0) += v;
            }
        }
        Ok(all)
    }
}

impl SegmentCollector for TimeHistogramSegment {
    type Fruit = HashMap<u64, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(t) = self.time.first(doc) {
            *self.counts.entry(t - t % self.step).or_insert(0) += 1;
        }
    }

    fn harvest(self) -> Self::Fruit {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::model::SpanId;

    /// Trace 1: web GET / (error, 50 µs) → cart get (OK, 2 µs, user=alice).
    /// Trace 2: web GET / (10 µs). Trace 3: cart put (region=eu on the
    /// resource). Logs in traces 1 and 2 and one without trace context.
    fn segment(dir: &Path) -> Segment {
        let web = resource("web", vec![("region".into(), AttrValue::Str("us".into()))]);
        let cart = resource("cart", vec![("region".into(), AttrValue::Str("eu".into()))]);
        let t = traces(
            vec![
                span(1, 1, &web, "GET /", 1_000, 50_000, 2, vec![("http.code".into(), AttrValue::Int(500))]),
                span(
                    1,
                    2,
                    &cart,
                    "get",
                    2_000,
                    2_000,
                    1,
                    vec![("user".into(), AttrValue::Str("alice".into()))],
                ),
                span(2, 1, &web, "GET /", 3_000, 10_000, 0, vec![("http.code".into(), AttrValue::Int(200))]),
                span(
                    3,
                    1,
                    &cart,
                    "put",
                    4_000,
                    1_000,
                    0,
                    vec![("user".into(), AttrValue::Str("bob".into()))],
                ),
            ],
            vec![
                log(1, &web, 1_500, 17, "Payment DECLINED for order"),
                log(2, &cart, 3_500, 9, "order shipped"),
                log(0, &cart, 5_000, 13, "disk almost full"),
            ],
        );
        write_and_open(dir, &small_cfg(), &t)
    }

    fn tids(hits: Vec<(TraceId, u64)>) -> Vec<u8> {
        hits.into_iter().map(|(t, _)| t.0[0]).collect()
    }

    #[test]
    fn span_search_by_service_operation_attribute_duration_status_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path());
        let search = |f: SpanFilter| tids(seg.search_spans(&f, 10).unwrap());
        // Latest first, by the latest matching span's start.
        assert_eq!(search(SpanFilter::default()), vec![3, 2, 1]);
        assert_eq!(seg.search_spans(&SpanFilter::default(), 10).unwrap()[0].1, 4_000);
        assert_eq!(search(SpanFilter { service: Some("web".into()), ..Default::default() }), vec![2, 1]);
        assert_eq!(search(SpanFilter { operation: Some("put".into()), ..Default::default() }), vec![3]);
        assert!(search(SpanFilter { service: Some("nope".into()), ..Default::default() }).is_empty());
        let attr = |k: &str, v: &str| SpanFilter { attrs: vec![(k.into(), v.into())], ..Default::default() };
        assert_eq!(search(attr("user", "alice")), vec![1]);
        assert_eq!(search(attr("http.code", "200")), vec![2]);
        // A resource attribute matches every span of that resource.
        assert_eq!(search(attr("region", "eu")), vec![3, 1]);
        assert!(search(attr("user", "carol")).is_empty());
        let dur = |lo, hi| SpanFilter { min_duration_ns: lo, max_duration_ns: hi, ..Default::default() };
        assert_eq!(search(dur(Some(20_000), None)), vec![1]);
        assert_eq!(search(dur(None, Some(1_000))), vec![3]);
        assert_eq!(search(dur(Some(2_000), Some(10_000))), vec![2, 1]);
        let status = |s| SpanFilter { status: Some(s), ..Default::default() };
        assert_eq!(search(status(StatusFilter::Error)), vec![1]);
        assert_eq!(search(status(StatusFilter::Ok)), vec![3, 2, 1]);
        let time = SpanFilter { start_ns: Some(1_500), end_ns: Some(3_000), ..Default::default() };
        assert_eq!(tids(seg.search_spans(&time, 10).unwrap()), vec![2, 1]);
        // Conditions hold on one span: web spans are not "get".
        let both =
            SpanFilter { service: Some("web".into()), operation: Some("get".into()), ..Default::default() };
        assert!(search(both).is_empty());
        assert_eq!(tids(seg.search_spans(&SpanFilter::default(), 2).unwrap()), vec![3, 2]);
        assert_eq!(tids(seg.search_spans(&SpanFilter::default(), 0).unwrap()), vec![3]);
    }

    #[test]
    fn log_search_by_words_service_severity_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path());
        let bodies = |f: LogFilter| {
            seg.search_logs(&f, 10)
                .unwrap()
                .into_iter()
                .map(|l| match l.body {
                    AttrValue::Str(s) => s,
                    v => panic!("{v:?}"),
                })
                .collect::<Vec<_>>()
        };
        let words =
            |w: &[&str]| LogFilter { words: w.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        assert_eq!(bodies(words(&["declined"])), vec!["Payment DECLINED for order"]);
        assert_eq!(bodies(words(&["order"])), vec!["order shipped", "Payment DECLINED for order"]);
        // Attribute values are searchable too.
        assert_eq!(bodies(words(&["alice"])).len(), 3);
        assert!(bodies(words(&["order", "disk"])).is_empty());
        assert_eq!(bodies(LogFilter { service: Some("cart".into()), ..Default::default() }).len(), 2);
        assert_eq!(bodies(LogFilter { min_severity: Some(13), ..Default::default() }).len(), 2);
        let time = LogFilter { start_ns: Some(3_000), end_ns: Some(4_000), ..Default::default() };
        assert_eq!(bodies(time), vec!["order shipped"]);
        let by_trace = LogFilter { trace_id: Some(TraceId([2; 16])), ..words(&["shipped"]) };
        assert_eq!(bodies(by_trace), vec!["order shipped"]);
        let by_trace = LogFilter { trace_id: Some(TraceId([9; 16])), ..Default::default() };
        assert!(bodies(by_trace).is_empty());
    }

    #[test]
    fn log_rows_and_counts_come_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path());
        let rows = seg.search_log_rows(&LogFilter::default(), 2).unwrap();
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![5_000, 3_500]);
        for (time, row) in rows {
            assert_eq!(seg.read_logs(vec![row..row + 1]).unwrap()[0].effective_time(), time);
        }
        let counts = seg.count_logs(&LogFilter::default(), 2_000).unwrap();
        assert_eq!(counts, HashMap::from([(0, 1), (2_000, 1), (4_000, 1)]));
        let counts = seg.count_logs(&LogFilter { min_severity: Some(17), ..Default::default() }, 0).unwrap();
        assert_eq!(counts, HashMap::from([(1_500, 1)]));
    }

    #[test]
    fn search_terms_are_the_search_text_of_each_value() {
        let mut t = String::new();
        for v in [
            AttrValue::Str("a=b".into()),
            AttrValue::Int(-3),
            AttrValue::Double(1.5),
            AttrValue::Double(1e300),
            AttrValue::Bool(true),
            AttrValue::Bool(false),
        ] {
            assert!(search_term(&mut t, "k", &v));
            assert_eq!(t, format!("k={}", v.as_search_text().unwrap()));
        }
        assert!(!search_term(&mut t, "k", &AttrValue::Bytes(vec![1])));
        assert!(!search_term(&mut t, "k", &AttrValue::Empty));
    }

    #[test]
    fn attribute_terms_walk_from_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path());
        let mut terms = Vec::new();
        seg.for_each_attr_term("http.", |t| {
            terms.push(t.to_string());
            true
        })
        .unwrap();
        assert_eq!(terms, vec!["http.code=200", "http.code=500"]);
        let mut first = Vec::new();
        seg.for_each_attr_term("", |t| {
            first.push(t.to_string());
            false
        })
        .unwrap();
        assert_eq!(first, vec!["http.code=200"]);
        assert_eq!(seg.resources().len(), 2);
    }

    #[test]
    fn span_rows_map_to_their_trace_and_pruning_keeps_the_latest() {
        let e = |b: u8, row| TraceIndexEntry {
            trace_id: TraceId([b; 16]),
            span_row: row,
            span_count: 2,
            log_row: 0,
            log_count: 0,
            wal_pos: 0,
        };
        let index = vec![e(1, 0), e(2, 2), e(3, 4)];
        assert_eq!(trace_of_span_row(&index, 0).unwrap().trace_id, TraceId([1; 16]));
        assert_eq!(trace_of_span_row(&index, 3).unwrap().trace_id, TraceId([2; 16]));
        assert_eq!(trace_of_span_row(&index, 99).unwrap().trace_id, TraceId([3; 16]));
        assert!(trace_of_span_row(&[], 0).is_none());
        let mut best: HashMap<TraceId, u64> = (0..10u8).map(|i| (TraceId([i; 16]), u64::from(i))).collect();
        prune(&mut best, 3);
        let mut kept: Vec<u64> = best.into_values().collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![7, 8, 9]);
    }

    #[test]
    fn many_matching_spans_in_few_traces_use_the_collector() {
        let dir = tempfile::tempdir().unwrap();
        let res = resource("svc", vec![]);
        // More matching spans than the top-k ladder visits, in two traces.
        let n = SEARCH_TOP_SPANS_MAX as u64 / 2 + 8;
        let spans = (0..2u8)
            .flat_map(|t| (0..n).map(move |i| (t, i)))
            .map(|(t, i)| {
                let mut s = span(t + 1, 1, &res, "op", i * 2 + u64::from(t), 1, 0, vec![]);
                s.span_id = SpanId(i.to_le_bytes());
                s
            })
            .collect();
        let cfg = crate::segment::SegmentConfig::default();
        let seg = write_and_open(dir.path(), &cfg, &traces(spans, vec![]));
        let hits = seg.search_spans(&SpanFilter::default(), 3).unwrap();
        assert_eq!(hits, vec![(TraceId([2; 16]), (n - 1) * 2 + 1), (TraceId([1; 16]), (n - 1) * 2)]);
    }
}
