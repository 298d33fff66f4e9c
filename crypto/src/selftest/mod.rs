//! The start-up self-test (PROTOCOL.md §8.4): for every enabled suite, KEM
//! and signature round trips and known-answer checks, plus known answers for
//! the classical primitives every suite shares. Its result decides whether
//! this node can speak PQ at all.
//!
//! pqcrypto cannot be seeded, so the PQ known answers are replay answers,
//! frozen once from this build's primitives (see `generate_known_answers`):
//! a fixed secret key and ciphertext must decapsulate to a fixed secret, a
//! fixed signature must verify, and Dilithium5 (deterministic) must
//! reproduce its signature byte for byte.

use std::time::{Duration, Instant};

use crate::suite::Suite;

/// The message the signature known answers sign.
pub const KAT_MESSAGE: &[u8; 32] = b"pqnode self-test known answer v1";

/// The outcome for one suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteResult {
    /// The suite.
    pub suite: Suite,
    /// Whether every check passed.
    pub passed: bool,
    /// The first check that failed, and why.
    pub failure: Option<String>,
    /// How long the checks took.
    pub duration: Duration,
}

/// The outcome of the whole self-test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTestReport {
    /// Whether the binary carries the PQ primitives (the `pqc` feature).
    pub pqc_built: bool,
    /// The classical known answers (X25519, ChaCha20-Poly1305, HKDF, HMAC).
    pub classical: Result<(), String>,
    /// One entry per suite tested, in the order asked.
    pub suites: Vec<SuiteResult>,
    /// How long the whole self-test took.
    pub duration: Duration,
}

impl SelfTestReport {
    /// True if the classical checks and every suite passed.
    pub fn passed(&self) -> bool {
        self.classical.is_ok() && !self.suites.is_empty() && self.suites.iter().all(|s| s.passed)
    }

    /// The suites that passed, in the order asked.
    pub fn available_suites(&self) -> Vec<Suite> {
        if self.classical.is_err() {
            return Vec::new();
        }
        self.suites
            .iter()
            .filter(|s| s.passed)
            .map(|s| s.suite)
            .collect()
    }

    /// Why PQ is unavailable, if no suite passed.
    pub fn unavailable_reason(&self) -> Option<String> {
        if !self.pqc_built {
            return Some("built without pqc".into());
        }
        if let Err(e) = &self.classical {
            return Some(format!("self-test failed: {e}"));
        }
        if self.suites.is_empty() {
            return Some("no suite enabled".into());
        }
        if self.available_suites().is_empty() {
            let reasons: Vec<String> = self
                .suites
                .iter()
                .map(|s| format!("{}: {}", s.suite, s.failure.as_deref().unwrap_or("failed")))
                .collect();
            return Some(format!("self-test failed: {}", reasons.join("; ")));
        }
        None
    }
}

/// Runs the self-test for `suites`.
pub fn run(suites: &[Suite]) -> SelfTestReport {
    let start = Instant::now();
    let classical = classical::check();
    let suites = suites
        .iter()
        .map(|&suite| {
            let t = Instant::now();
            let outcome = check_suite(suite);
            SuiteResult {
                suite,
                passed: outcome.is_ok(),
                failure: outcome.err(),
                duration: t.elapsed(),
            }
        })
        .collect();
    SelfTestReport {
        pqc_built: crate::PQC_BUILT,
        classical,
        suites,
        duration: start.elapsed(),
    }
}

#[cfg(not(feature = "pqc"))]
fn check_suite(_: Suite) -> Result<(), String> {
    Err("built without pqc".into())
}

#[cfg(feature = "pqc")]
fn check_suite(suite: Suite) -> Result<(), String> {
    pq::kem_round_trip(suite)?;
    pq::kem_known_answer(suite)?;
    pq::sig_round_trip(suite)?;
    pq::sig_known_answer(suite)
}

mod classical;
#[cfg(feature = "pqc")]
mod pq;

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "pqc")]
    #[test]
    fn every_suite_passes() {
        let report = run(&Suite::ALL);
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.available_suites(), Suite::ALL.to_vec());
        assert_eq!(report.unavailable_reason(), None);
        assert!(report.suites.iter().all(|s| s.duration > Duration::ZERO));
    }

    #[cfg(not(feature = "pqc"))]
    #[test]
    fn without_pqc_every_suite_reports_why() {
        let report = run(&Suite::ALL);
        assert!(!report.passed());
        assert_eq!(
            report.unavailable_reason().as_deref(),
            Some("built without pqc")
        );
        assert!(
            report
                .suites
                .iter()
                .all(|s| s.failure.as_deref() == Some("built without pqc"))
        );
    }

    #[test]
    fn no_suite_is_not_a_pass() {
        let report = run(&[]);
        assert!(!report.passed());
        assert!(report.unavailable_reason().is_some());
    }
}
