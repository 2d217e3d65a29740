//! Tandem graph files: any bytes give a graph or an error; a parsed graph re-serializes and
//! re-parses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = tandem_graph::Graph::from_bytes(data) {
        let _ = g.variables();
        if let Ok(bytes) = g.to_bytes() {
            // What Tandem wrote it must read back.
            if tandem_graph::Graph::from_bytes(&bytes).is_err() {
                panic!("a re-serialized graph file does not parse");
            }
        }
    }
});
