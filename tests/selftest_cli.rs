//! `pqnode selftest`: the real binary, text and JSON.

use std::process::Command;

fn pqnode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pqnode"))
        .args(args)
        .output()
        .expect("pqnode runs")
}

#[test]
fn selftest_passes_and_reports_every_suite() {
    let out = pqnode(&["selftest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("kyber1024-dilithium5") && text.contains("mlkem1024-mldsa87"),
        "{text}"
    );
    assert_eq!(
        text.matches("passed").count(),
        4,
        "classical, two suites, summary: {text}"
    );

    let out = pqnode(&["selftest", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["passed"], true);
    assert_eq!(v["pqcBuilt"], true);
    assert_eq!(v["classical"]["passed"], true);
    assert_eq!(v["unavailableReason"], serde_json::Value::Null);
    let suites = v["suites"].as_array().expect("suites");
    assert_eq!(suites.len(), 2);
    for s in suites {
        assert_eq!(s["passed"], true, "{s}");
        assert!(s["durationMs"].as_f64().is_some_and(|d| d > 0.0), "{s}");
    }
}

#[test]
fn selftest_takes_a_suite_list_and_rejects_unknown_suites() {
    let out = pqnode(&["selftest", "--json", "--suites", "mlkem1024-mldsa87"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["suites"].as_array().map(|a| a.len()), Some(1));
    assert_eq!(v["suites"][0]["suite"], "mlkem1024-mldsa87");

    let out = pqnode(&["selftest", "--suites", "kyber512"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kyber512"), "{err}");
}
