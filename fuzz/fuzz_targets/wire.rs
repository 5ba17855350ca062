//! The broker's request bodies (a judge pod's results report and key request: JSON from inside a
//! tenant's pod) and the results lines a namespace editor can write into ConfigMaps: parsed or
//! refused, never a panic; a report the broker accepts is stored and read back unchanged.
#![no_main]

use std::sync::LazyLock;

use byok_operator::broker::results::{ResultsMac, read_config_map, read_results, results_config_maps};
use byok_operator::crd::EvalJob;
use byok_operator::judge::wire::{KeyRequest, ResultsReport};
use libfuzzer_sys::fuzz_target;

static MAC: LazyLock<ResultsMac> = LazyLock::new(|| ResultsMac::derive(b"fuzz"));
static EJ: LazyLock<EvalJob> = LazyLock::new(|| {
    let spec = serde_json::from_value(serde_json::json!({
        "provider": "openai", "scorers": [{"type": "json_valid"}], "cases": [{"output": "{}"}]
    }))
    .expect("spec");
    let mut ej = EvalJob::new("ej", spec);
    ej.metadata.namespace = Some("ns".into());
    ej.metadata.uid = Some("uid".into());
    ej
});

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<KeyRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let (results, unreadable) = read_results("cm", text);
        let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(results.len() + unreadable.len(), lines, "every line counted");
    }
    let Ok(report) = serde_json::from_slice::<ResultsReport>(data) else { return };
    let Ok(cms) = results_config_maps(&EJ, &report, &MAC) else { return };
    let mut back = Vec::new();
    for cm in &cms {
        let read = read_config_map(cm, "uid", &MAC).expect("the broker's own ConfigMap verifies");
        assert!(read.unreadable.is_empty(), "{:?}", read.unreadable);
        back.extend(read.results);
    }
    assert_eq!(back, report.results, "stored results read back unchanged");
});
