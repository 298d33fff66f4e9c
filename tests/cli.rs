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

/// `pqnode run` on loopback (port 0 for P2P and the API, no mDNS) with its
/// data in `dir`, quiet logs and no key passphrase.
fn run_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", "127.0.0.1:0", "--mdns", "false", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env_remove("PQNODE_KEY_PASSPHRASE");
    cmd
}

/// Sends SIGTERM to `child`.
fn sigterm(child: &std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
}

/// Waits until `within` after `since` for `child` to exit; kills it and
/// fails otherwise.
fn wait_exit(
    child: &mut std::process::Child,
    since: Instant,
    within: Duration,
) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if since.elapsed() > within {
            let _ = child.kill();
            panic!("still running {within:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `pqnode run`: the child and the lines it printed up to `API:`.
struct RunningBin {
    child: std::process::Child,
    lines: Vec<String>,
}

impl RunningBin {
    fn start(dir: &std::path::Path) -> Self {
        Self::start_with(dir, &[])
    }

    fn start_with(dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = run_command(dir)
            .args(extra)
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
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                panic!("no API line: {lines:?}")
            };
            let done = line.starts_with("API: ");
            lines.push(line);
            if done {
                break;
            }
        }
        RunningBin { child, lines }
    }

    fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {:?}", self.lines))
    }

    /// `GET path` on the API; the body.
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let addr = self.line("API: http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    /// Sends SIGTERM and waits (at most 5 s) for a successful exit.
    fn terminate(mut self) {
        let t0 = Instant::now();
        sigterm(&self.child);
        let status = wait_exit(&mut self.child, t0, Duration::from_secs(5));
        assert!(status.success(), "{status:?}");
    }
}

#[test]
fn run_starts_pq_and_stops_on_sigterm_within_five_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let first = RunningBin::start(dir.path());
    let peer_id = first.line("PeerId: ").to_owned();
    assert!(peer_id.starts_with("12D3KooW"), "{peer_id}");
    assert!(
        first
            .line("Listening on /ip4/127.0.0.1/tcp/")
            .contains(&peer_id)
    );
    for suite in ["kyber1024-dilithium5", "mlkem1024-mldsa87"] {
        let fp = first.line(&format!("Fingerprint {suite}: "));
        assert_eq!(fp.len(), 64 + 15, "16 groups of 4 hex digits: {fp}");
    }
    let status: serde_json::Value = serde_json::from_str(&first.get("/api/crypto/status")).unwrap();
    assert_eq!(status["initialized"], true, "{status}");
    assert_eq!(status["mode"], "pq", "{status}");
    assert_eq!(status["selfTest"]["passed"], true, "{status}");
    assert_eq!(status["identity"]["peerId"], peer_id.as_str());
    let health: serde_json::Value = serde_json::from_str(&first.get("/api/health")).unwrap();
    assert_eq!(health["components"]["crypto"]["status"], "ok", "{health}");
    first.terminate();

    // State intact: the same identity and token at the next start.
    let token = std::fs::read_to_string(dir.path().join(pqnode::api::auth::TOKEN_FILE)).unwrap();
    let second = RunningBin::start(dir.path());
    assert_eq!(second.line("PeerId: "), peer_id);
    second.terminate();
    let again = std::fs::read_to_string(dir.path().join(pqnode::api::auth::TOKEN_FILE)).unwrap();
    assert_eq!(token, again);
}

#[test]
fn unreadable_pq_keys_mean_classical_fallback_or_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let made = output(
        Command::new(BIN)
            .args(["keys", "generate", "--data-dir"])
            .arg(dir.path()),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = dir.path().join("sig-mlkem1024-mldsa87.key");
    let mut bytes = std::fs::read(&key).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&key, &bytes).unwrap();

    // required: the node refuses to start and names the file.
    let refused = output(run_command(dir.path()).args(["--policy", "required"]));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("sig-mlkem1024-mldsa87.key"), "{err}");

    // preferred: it runs in classical-fallback and says why.
    let node = RunningBin::start(dir.path());
    let status: serde_json::Value = serde_json::from_str(&node.get("/api/crypto/status")).unwrap();
    assert_eq!(status["mode"], "classical-fallback", "{status}");
    assert_eq!(status["production"], false, "{status}");
    let reason = status["unavailableReason"].as_str().unwrap_or_default();
    assert!(reason.contains("sig-mlkem1024-mldsa87.key"), "{status}");
    let health: serde_json::Value = serde_json::from_str(&node.get("/api/health")).unwrap();
    assert_eq!(health["status"], "degraded", "{health}");
    node.terminate();

    // The unreadable file was never overwritten or "repaired".
    assert_eq!(std::fs::read(&key).unwrap(), bytes);
}

#[test]
fn a_running_node_owns_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let node = RunningBin::start(dir.path());
    let peer_id = node.line("PeerId: ").to_owned();
    let keys_before: Vec<Vec<u8>> = ["identity.key", "sig-kyber1024-dilithium5.key"]
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();

    // A second node on the same directory is refused, naming the holder.
    let second = output(&mut run_command(dir.path()));
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    let pid = format!("pid {}", node.child.id());
    assert!(
        err.contains("in use by another pqnode process") && err.contains(&pid),
        "{err}"
    );

    // So are the key commands that write: rotate and export-record.
    let rotate = || {
        output(
            Command::new(BIN)
                .args(["keys", "rotate", "--suite", "kyber1024-dilithium5"])
                .arg("--data-dir")
                .arg(dir.path())
                .env_remove("PQNODE_KEY_PASSPHRASE"),
        )
    };
    let refused = rotate();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains(&pid) && err.contains("`pqnode run`"), "{err}");
    let export = output(
        Command::new(BIN)
            .args(["keys", "export-record", "--out"])
            .arg(dir.path().join("record.bin"))
            .arg("--data-dir")
            .arg(dir.path()),
    );
    assert!(!export.status.success());
    assert!(!dir.path().join("record.bin").exists());
    // Reading is allowed.
    let show = output(
        Command::new(BIN)
            .args(["keys", "show", "--data-dir"])
            .arg(dir.path()),
    );
    assert!(show.status.success());
    assert!(String::from_utf8_lossy(&show.stdout).contains(&peer_id));
    // Nothing was touched.
    let keys_after: Vec<Vec<u8>> = ["identity.key", "sig-kyber1024-dilithium5.key"]
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    assert_eq!(keys_before, keys_after);

    // Once the node has stopped, the directory is free again.
    node.terminate();
    let rotated = rotate();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert_ne!(
        std::fs::read(dir.path().join("sig-kyber1024-dilithium5.key")).unwrap(),
        keys_before[1]
    );
}

#[test]
fn sigterm_while_starting_still_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = run_command(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The lock is taken just after the signal handlers are installed, and
    // before the self-test, the keys and the swarm: signal the node there.
    let lock = dir.path().join(pqnode_keys::lock::LOCK_FILE);
    let pid = format!("pid {},", child.id());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid)) {
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the node never took its lock");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    sigterm(&child);
    let status = wait_exit(&mut child, Instant::now(), Duration::from_secs(30));
    // Not killed by the signal's default action: a clean exit.
    assert!(status.success(), "{status:?}");
}

#[test]
fn keys_and_pins_find_the_data_directory_like_run() {
    // `data_dir` comes from the configuration file, as for `pqnode run`.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("pqnode.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\n", data.display().to_string()),
    )
    .unwrap();
    let generate = output(
        Command::new(BIN)
            .args(["keys", "generate", "--config"])
            .arg(&config)
            .env_remove("PQNODE_DATA_DIR")
            .env_remove("PQNODE_KEY_PASSPHRASE"),
    );
    assert!(
        generate.status.success(),
        "{}",
        String::from_utf8_lossy(&generate.stderr)
    );
    assert!(
        data.join("identity.key").exists(),
        "keys went to the file's data_dir"
    );
    let show = |cmd: &mut Command| {
        let out = output(cmd.env_remove("PQNODE_DATA_DIR"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let by_config = show(
        Command::new(BIN)
            .args(["keys", "show", "--json", "--config"])
            .arg(&config),
    );
    let by_flag = show(
        Command::new(BIN)
            .args(["keys", "show", "--json", "--data-dir"])
            .arg(&data),
    );
    let by_env = show(
        Command::new(BIN)
            .args(["keys", "show", "--json"])
            .env("PQNODE_CONFIG", &config),
    );
    assert_eq!(by_config, by_flag);
    assert_eq!(by_config, by_env);

    // `pins` takes its options before or after the subcommand.
    for args in [
        vec!["pins", "list", "--json", "--config"],
        vec!["pins", "--config"],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args).arg(&config);
        if args.len() == 2 {
            cmd.args(["list", "--json"]);
        }
        let out = output(cmd.env_remove("PQNODE_DATA_DIR"));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(data.join("pqnode.redb").exists());
    }
}

#[test]
fn run_refuses_a_remote_api_address_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(BIN)
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--mdns", "false"])
            .args(["--api", "0.0.0.0:0", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn"),
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`api`") && stderr.contains("--api-allow-remote"),
        "{stderr}"
    );
    // Nothing was created for a node that did not start.
    assert!(!dir.path().join("identity.key").exists());
}
