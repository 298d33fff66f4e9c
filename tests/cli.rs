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
        let mut cmd = run_command(dir);
        cmd.args(extra);
        Self::start_cmd(cmd)
    }

    fn start_cmd(mut cmd: Command) -> Self {
        let mut child = cmd
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
        self.get_as(path, None)
    }

    /// `GET path`, with `Authorization: Bearer token` when given.
    fn get_as(&self, path: &str, token: Option<&str>) -> String {
        use std::io::{Read, Write};
        let addr = self.line("API: http://");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\r\n"
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
    // Without the token the reason names what failed but no path; with
    // it, the file.
    let reason = status["unavailableReason"].as_str().unwrap_or_default();
    assert!(reason.contains("PQ keys could not be loaded"), "{status}");
    assert!(!reason.contains(".key"), "{status}");
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
    let full: serde_json::Value =
        serde_json::from_str(&node.get_as("/api/crypto/status", Some(token.trim()))).unwrap();
    let reason = full["unavailableReason"].as_str().unwrap_or_default();
    assert!(reason.contains("sig-mlkem1024-mldsa87.key"), "{full}");
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
        assert!(data.join("state.redb").exists());
    }

    // `pqnode run --config F` runs as the node `keys show --config F` shows.
    let shown: serde_json::Value = serde_json::from_str(&by_config).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(["--api", "127.0.0.1:0", "--mdns", "false", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .env_remove("PQNODE_DATA_DIR")
        .env_remove("PQNODE_KEY_PASSPHRASE");
    let node = RunningBin::start_cmd(cmd);
    assert_eq!(node.line("PeerId: "), shown["peerId"].as_str().unwrap());
    node.terminate();
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

/// Every file of `dir` and its bytes, except the lock file, which holds the
/// PID of the last process that locked the directory.
fn key_dir_snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "pqnode.lock")
        .map(|e| {
            let bytes = if e.file_type().unwrap().is_file() {
                std::fs::read(e.path()).unwrap()
            } else {
                Vec::new()
            };
            (e.file_name().into_string().unwrap(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// Issue 22: an encrypted one-suite store and `run` with both suites.
/// Without the passphrase, or with a wrong one, the start fails with a clear
/// message and writes nothing; with the right one the second key is created
/// encrypted, and the next start uses PQ with both suites.
#[test]
fn an_encrypted_store_is_completed_only_with_its_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let made = output(
        Command::new(BIN)
            .args([
                "keys",
                "generate",
                "--suites",
                "mlkem1024-mldsa87",
                "--data-dir",
            ])
            .arg(&dir)
            .env("PQNODE_KEY_PASSPHRASE", "right one"),
    );
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let before = key_dir_snapshot(&dir);

    // (a) no passphrase
    let out = output(&mut run_command(&dir));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.key") && err.contains("PQNODE_KEY_PASSPHRASE"),
        "{err}"
    );
    // One line, no repeated cause chain.
    assert_eq!(
        err.lines().filter(|l| l.starts_with("Error: ")).count(),
        1,
        "{err}"
    );
    assert!(!err.contains("Caused by"), "{err}");
    assert_eq!(
        key_dir_snapshot(&dir),
        before,
        "a failed start wrote a file"
    );
    // (b) a wrong passphrase
    let out = output(run_command(&dir).env("PQNODE_KEY_PASSPHRASE", "wrong one"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.key"), "{err}");
    assert_eq!(
        key_dir_snapshot(&dir),
        before,
        "a failed start wrote a file"
    );

    // (c) the right one: the second key is created, encrypted.
    let mut cmd = run_command(&dir);
    cmd.env("PQNODE_KEY_PASSPHRASE", "right one");
    let node = RunningBin::start_cmd(cmd);
    let fingerprints: Vec<String> = ["kyber1024-dilithium5", "mlkem1024-mldsa87"]
        .iter()
        .map(|s| node.line(&format!("Fingerprint {s}: ")).to_owned())
        .collect();
    let status: serde_json::Value = serde_json::from_str(&node.get("/api/crypto/status")).unwrap();
    assert_eq!(
        (status["mode"].as_str(), status["keyPairs"].as_u64()),
        (Some("pq"), Some(2)),
        "{status}"
    );
    node.terminate();
    let protection = pqnode_keys::store::file_protection(&dir, false).unwrap();
    assert_eq!(protection.len(), 3, "{protection:?}");
    assert!(protection.iter().all(|(_, e)| *e), "{protection:?}");

    // The next start loads both suites' keys, the same ones.
    let mut cmd = run_command(&dir);
    cmd.env("PQNODE_KEY_PASSPHRASE", "right one");
    let again = RunningBin::start_cmd(cmd);
    for (s, fp) in ["kyber1024-dilithium5", "mlkem1024-mldsa87"]
        .iter()
        .zip(&fingerprints)
    {
        assert_eq!(again.line(&format!("Fingerprint {s}: ")), fp);
    }
    let status: serde_json::Value = serde_json::from_str(&again.get("/api/crypto/status")).unwrap();
    assert_eq!(
        (status["mode"].as_str(), status["keyPairs"].as_u64()),
        (Some("pq"), Some(2)),
        "{status}"
    );
    again.terminate();
}

/// Issue 22: one unencrypted key among encrypted ones is refused by `run`,
/// naming the file, and `keys show` lists each file's protection.
#[test]
fn a_mixed_key_store_is_refused_by_run_and_shown_by_keys_show() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, plain) = (tmp.path().join("data"), tmp.path().join("plain"));
    for (d, pass) in [(&dir, Some("pw")), (&plain, None)] {
        let mut cmd = Command::new(BIN);
        cmd.args(["keys", "generate", "--data-dir"]).arg(d);
        match pass {
            Some(p) => cmd.env("PQNODE_KEY_PASSPHRASE", p),
            None => cmd.env_remove("PQNODE_KEY_PASSPHRASE"),
        };
        let made = output(&mut cmd);
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
    }
    let name = "sig-kyber1024-dilithium5.key";
    std::fs::copy(plain.join(name), dir.join(name)).unwrap();

    let out = output(run_command(&dir).env("PQNODE_KEY_PASSPHRASE", "pw"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mixes encrypted and unencrypted") && err.contains(name),
        "{err}"
    );

    let out = output(
        Command::new(BIN)
            .args(["keys", "show", "--data-dir"])
            .arg(&dir)
            .env("PQNODE_KEY_PASSPHRASE", "pw"),
    );
    assert!(!out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains(&format!("{name}  (NOT encrypted)")),
        "{shown}"
    );
    assert!(shown.contains("identity.key  (encrypted)"), "{shown}");
    assert!(
        shown.contains("sig-mlkem1024-mldsa87.key  (encrypted)"),
        "{shown}"
    );
}

/// Issue 22: `keys generate --force --suites X` with another suite's key
/// present is refused, naming it, and changes nothing.
#[test]
fn a_forced_regeneration_of_some_suites_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let generate = |extra: &[&str]| {
        output(
            Command::new(BIN)
                .args(["keys", "generate", "--data-dir"])
                .arg(&dir)
                .args(extra)
                .env_remove("PQNODE_KEY_PASSPHRASE"),
        )
    };
    assert!(generate(&[]).status.success());
    let before = key_dir_snapshot(&dir);
    let out = generate(&["--force", "--suites", "kyber1024-dilithium5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sig-mlkem1024-mldsa87.key"), "{err}");
    assert_eq!(key_dir_snapshot(&dir), before);
}

/// `pqnode pins …` for the data directory `dir`, through the API at `api`
/// when given (the node runs); the output.
fn pins(dir: &std::path::Path, api: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("pins").args(args).arg("--data-dir").arg(dir);
    if let Some(api) = api {
        cmd.args(["--api", api]);
    }
    output(cmd.env("RUST_LOG", "warn"))
}

/// Issue 21: `pqnode pins` against a running node (through its API) and a
/// stopped one (the database) gives the same output; `add` of another key
/// for a connected peer disconnects it as `key-mismatch`.
#[test]
fn pins_commands_agree_running_or_stopped_and_a_new_pin_disconnects_a_mismatched_peer() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = RunningBin::start(da.path());
    let a_addr = format!(
        "/ip4/127.0.0.1/tcp/{}",
        a.line("Listening on /ip4/127.0.0.1/tcp/")
    );
    let api = a.line("API: http://").to_owned();
    let b = RunningBin::start_with(db.path(), &["--peer", &a_addr]);
    let b_id = b.line("PeerId: ").to_owned();

    // A pins B on first use once their handshake is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pins(da.path(), Some(&api), &["list", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if String::from_utf8_lossy(&out.stdout).contains(&b_id) {
            break;
        }
        assert!(Instant::now() < deadline, "A never pinned B");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Another key for B's suite: B is disconnected as key-mismatch at once.
    let other = "00".repeat(32);
    let out = pins(
        da.path(),
        Some(&api),
        &["add", &b_id, &other, "--suite", "kyber1024-dilithium5"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers: serde_json::Value = serde_json::from_str(&a.get("/api/peers")).unwrap();
        let refused = peers["refused"].as_array().is_some_and(|l| {
            l.iter()
                .any(|p| p["peerId"] == b_id.as_str() && p["reason"] == "key-mismatch")
        });
        if refused {
            break;
        }
        assert!(Instant::now() < deadline, "B was not refused: {peers}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let running = pins(da.path(), Some(&api), &["list"]);
    assert!(
        running.status.success(),
        "{}",
        String::from_utf8_lossy(&running.stderr)
    );
    b.terminate();
    a.terminate();
    let stopped = pins(da.path(), None, &["list"]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&running.stdout),
        String::from_utf8_lossy(&stopped.stdout),
        "the same list running and stopped"
    );
    assert!(String::from_utf8_lossy(&stopped.stdout).contains(&b_id));

    // Removed on the stopped node's database.
    let out = pins(da.path(), None, &["remove", &b_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = pins(da.path(), None, &["list"]);
    assert!(!String::from_utf8_lossy(&after.stdout).contains(&b_id));
}
