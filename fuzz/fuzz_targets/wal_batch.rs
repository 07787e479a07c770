//! WAL record payloads (storage's own span and log batch encoding) through
//! their decoders, as replay reads them after a crash or disk damage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_storage::batch;

fuzz_target!(|data: &[u8]| {
    let _ = batch::decode_spans(data);
    let _ = batch::decode_logs(data);
});
