//! `pqnode selftest`: runs the start-up self-test and prints the result.

use std::process::ExitCode;

use clap::Parser;
use pqnode_crypto::Suite;
use pqnode_crypto::selftest::{self, SelfTestReport};
use serde::Serialize;

/// Arguments of `pqnode selftest`.
#[derive(Debug, Parser)]
pub struct Args {
    /// Suites to test, in preference order (comma-separated).
    #[arg(long, value_delimiter = ',', default_values = ["kyber1024-dilithium5", "mlkem1024-mldsa87"])]
    pub suites: Vec<Suite>,
    /// Print JSON for machines instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The JSON form of the report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportJson {
    /// True if every suite and the classical checks passed.
    pub passed: bool,
    /// Whether the binary carries the PQ primitives.
    pub pqc_built: bool,
    /// The classical known answers' outcome.
    pub classical: CheckJson,
    /// One entry per suite.
    pub suites: Vec<SuiteJson>,
    /// Why PQ is unavailable, if it is.
    pub unavailable_reason: Option<String>,
    /// Total duration in milliseconds.
    pub duration_ms: f64,
}

/// The classical checks' outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckJson {
    /// Whether they passed.
    pub passed: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// One suite's outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuiteJson {
    /// The suite's configuration name.
    pub suite: String,
    /// Whether every check passed.
    pub passed: bool,
    /// Why not.
    pub reason: Option<String>,
    /// Duration in milliseconds.
    pub duration_ms: f64,
}

impl From<&SelfTestReport> for ReportJson {
    fn from(r: &SelfTestReport) -> Self {
        ReportJson {
            passed: r.passed(),
            pqc_built: r.pqc_built,
            classical: CheckJson {
                passed: r.classical.is_ok(),
                reason: r.classical.clone().err(),
            },
            suites: r
                .suites
                .iter()
                .map(|s| SuiteJson {
                    suite: s.suite.name().to_owned(),
                    passed: s.passed,
                    reason: s.failure.clone(),
                    duration_ms: s.duration.as_secs_f64() * 1000.0,
                })
                .collect(),
            unavailable_reason: r.unavailable_reason(),
            duration_ms: r.duration.as_secs_f64() * 1000.0,
        }
    }
}

/// Runs the self-test; exit 0 only if every suite passed.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let report = selftest::run(&args.suites);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&ReportJson::from(&report))?
        );
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn ms(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The human-readable report.
pub fn render(report: &SelfTestReport) -> String {
    let mut out = String::new();
    match &report.classical {
        Ok(()) => out.push_str("classical (X25519, ChaCha20-Poly1305, HMAC-SHA512)  passed\n"),
        Err(e) => out.push_str(&format!(
            "classical (X25519, ChaCha20-Poly1305, HMAC-SHA512)  FAILED: {e}\n"
        )),
    }
    for s in &report.suites {
        match &s.failure {
            None => out.push_str(&format!(
                "{:<22} passed  ({})\n",
                s.suite.name(),
                ms(s.duration)
            )),
            Some(reason) => out.push_str(&format!(
                "{:<22} FAILED  ({}): {reason}\n",
                s.suite.name(),
                ms(s.duration)
            )),
        }
    }
    match report.unavailable_reason() {
        None if report.passed() => {
            out.push_str(&format!("self-test passed in {}\n", ms(report.duration)))
        }
        None => out
            .push_str("self-test: some suites failed; the node will use only those that passed\n"),
        Some(reason) => out.push_str(&format!("PQ unavailable: {reason}\n")),
    }
    out
}
