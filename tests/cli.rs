//! The `pqnode` binary: `config check` and `run` with a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pqnode");

/// Runs `cmd` to completion, killing it (and failing) after 30 s.
fn output(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bad_config_value_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pqnode.toml");
    std::fs::write(&path, "[pq]\npolicy = \"sometimes\"\n").unwrap();
    let out = output(
        Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&path)
            .env_remove("PQNODE_PQ_POLICY"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`pq.policy`") && stderr.contains("sometimes"),
        "{stderr}"
    );

    // The same key from a flag and from the environment.
    let out = output(Command::new(BIN).args(["config", "check", "--policy", "maybe"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`pq.policy` (from flag)"));
    let out = output(
        Command::new(BIN)
            .args(["config", "check"])
            .env("PQNODE_LIMITS_MAX_CONNECTIONS_PER_IP", "0"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(
        "`limits.max_connections_per_ip` (from env PQNODE_LIMITS_MAX_CONNECTIONS_PER_IP)"
    ));

    std::fs::write(
        &path,
        "role = \"bootstrap\"\n[limits]\nmax_established = 100\n",
    )
    .unwrap();
    let out = output(
        Command::new(BIN)
            .args(["config", "check", "--config"])
            .arg(&path),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}

#[test]
fn run_stops_on_sigterm_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api",
            "127.0.0.1:0",
            "--mdns",
            "false",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("no API line: {lines:?}")
            });
        let done = line.starts_with("API: ");
        lines.push(line);
        if done {
            break;
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("PeerId: 12D3KooW")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Listening on /ip4/127.0.0.1/tcp/")),
        "{lines:?}"
    );

    let t0 = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            panic!("still running 5 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // State intact: the token is still there.
    assert!(dir.path().join(pqnode::api::auth::TOKEN_FILE).exists());
}
