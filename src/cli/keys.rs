//! `pqnode keys`: create, show and rotate the node's keys; export and verify
//! signed PQ peer records (PROTOCOL.md §4).
//!
//! The passphrase of encrypted key files comes from `PQNODE_KEY_PASSPHRASE`
//! or `--passphrase-file`, never from a command-line argument (those are
//! visible to every user in the process list).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use libp2p::Multiaddr;
use libp2p::identity::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::keyfile::Passphrase;
use pqnode_keys::lock::DataDirLock;
use pqnode_keys::record::{self, PinCheck, VerifiedRecord, VerifyContext};
use pqnode_keys::store::{self, KeyStore, StoreOptions};
use pqnode_keys::{Fingerprint, fsutil, time};
use serde::Serialize;

/// Arguments of `pqnode keys`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// The `pqnode keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create the identity and one signing key per suite. Refuses if keys
    /// exist, unless --force (which first keeps a timestamped backup).
    Generate {
        /// Where the keys live.
        #[command(flatten)]
        store: StoreArgs,
        /// Replace existing keys (they are first copied to backup-<time>/).
        #[arg(long)]
        force: bool,
    },
    /// Print the PeerId, the suites, their fingerprints, creation times and
    /// the key files with their protection (a store that mixes encrypted and
    /// unencrypted files is listed file by file, then refused). Never prints
    /// secret bytes.
    Show {
        /// Where the keys live.
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON (`peerId`, `suites: [{suite, fingerprint, createdAt}]`,
        /// `files: [{path, encrypted}]`).
        #[arg(long)]
        json: bool,
    },
    /// Replace a suite's signing key. Records built during the next 7 days
    /// carry a rotation statement signed by the old key, so peers that
    /// pinned it accept the new one.
    Rotate {
        /// Where the keys live.
        #[command(flatten)]
        store: StoreArgs,
        /// The suite whose key to rotate.
        #[arg(long)]
        suite: Suite,
    },
    /// Write the current signed peer record (a libp2p signed envelope) to a file.
    ExportRecord {
        /// Where the keys live.
        #[command(flatten)]
        store: StoreArgs,
        /// The output file.
        #[arg(long)]
        out: PathBuf,
        /// The record's suite (default: the first one with a key).
        #[arg(long)]
        suite: Option<Suite>,
        /// An address to publish (repeatable).
        #[arg(long = "addr")]
        addrs: Vec<Multiaddr>,
        /// Validity in seconds (at most 604800).
        #[arg(long, default_value_t = record::DEFAULT_VALIDITY_SECS)]
        validity: u64,
    },
    /// Verify a record file (binary envelope, or its hex) and print what it
    /// says; exits non-zero with the reason if it does not verify.
    VerifyRecord {
        /// The record file.
        file: PathBuf,
        /// The PeerId the record must belong to.
        #[arg(long)]
        peer: Option<PeerId>,
        /// The fingerprint the key must match (or rotate from).
        #[arg(long)]
        pinned: Option<Fingerprint>,
        /// Verify at this time (unix seconds) instead of now.
        #[arg(long)]
        now: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where the key store is and how to open it.
#[derive(Debug, ClapArgs)]
pub struct StoreArgs {
    /// TOML configuration file: its `data_dir` is used, as by `pqnode run`.
    #[arg(long, value_name = "FILE", env = "PQNODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory (default: `PQNODE_DATA_DIR`, then the
    /// configuration's `data_dir`, then the platform data directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Read the key passphrase from this file (the alternative is the
    /// PQNODE_KEY_PASSPHRASE environment variable).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// Suites to use (comma-separated; default: all for generate, those
    /// with a key file otherwise).
    #[arg(long, value_delimiter = ',')]
    pub suites: Option<Vec<Suite>>,
    /// Load key files that group or others can access.
    #[arg(long)]
    pub insecure_permissions: bool,
}

impl StoreArgs {
    /// The data directory, resolved like `pqnode run` does (flag >
    /// `PQNODE_DATA_DIR` > `--config` file > default).
    fn dir(&self) -> anyhow::Result<PathBuf> {
        let flags = super::config::NodeFlags {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            api: None,
        };
        Ok(flags.load()?.data_dir)
    }

    fn options(&self, dir: &Path, generating: bool) -> anyhow::Result<StoreOptions> {
        let passphrase = match &self.passphrase_file {
            Some(path) => Some(Passphrase::from_file(path, self.insecure_permissions)?),
            None => Passphrase::from_env()?,
        };
        let suites = match &self.suites {
            Some(s) => s.clone(),
            None if generating => Suite::ALL.to_vec(),
            None => store::present_suites(dir)?,
        };
        Ok(StoreOptions {
            suites,
            passphrase,
            insecure_permissions: self.insecure_permissions,
            ..StoreOptions::default()
        })
    }

    fn open(&self) -> anyhow::Result<KeyStore> {
        let dir = self.dir()?;
        let options = self.options(&dir, false)?;
        Ok(KeyStore::open(&dir, options)?)
    }

    /// Takes the data directory's lock for a command that writes to it
    /// (keys, or the record `seq`): refused while `pqnode run` or another
    /// writer uses the directory.
    fn lock(&self, dir: &Path, command: &str) -> anyhow::Result<DataDirLock> {
        Ok(DataDirLock::acquire(
            dir,
            command,
            self.insecure_permissions,
        )?)
    }
}

/// `pqnode keys show --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ShowJson {
    peer_id: String,
    suites: Vec<SuiteJson>,
    files: Vec<FileJson>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FileJson {
    path: String,
    /// Passphrase-protected (the record state never is: it is not secret).
    encrypted: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct SuiteJson {
    suite: String,
    fingerprint: String,
    created_at: String,
}

/// `pqnode keys verify-record --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordJson {
    peer_id: String,
    suite: String,
    fingerprint: String,
    seq: u64,
    issued_at: String,
    expires_at: String,
    addrs: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotated_from: Option<String>,
}

/// Runs `pqnode keys …`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Generate { store, force } => generate(&store, force),
        KeysCommand::Show { store, json } => show(&store, json),
        KeysCommand::Rotate { store, suite } => rotate(&store, suite),
        KeysCommand::ExportRecord {
            store,
            out,
            suite,
            addrs,
            validity,
        } => export_record(&store, &out, suite, &addrs, validity),
        KeysCommand::VerifyRecord {
            file,
            peer,
            pinned,
            now,
            json,
        } => verify_record(&file, peer, pinned, now, json),
    }
}

/// How each of `ks`'s files is protected, from the file headers.
fn protection_of(ks: &KeyStore, insecure: bool) -> anyhow::Result<Vec<(PathBuf, bool)>> {
    let keys = store::file_protection(ks.dir(), insecure)?;
    Ok(ks
        .files()
        .into_iter()
        .map(|f| {
            let encrypted = keys.iter().any(|(p, e)| *p == f && *e);
            (f, encrypted)
        })
        .collect())
}

fn print_files(files: &[(PathBuf, bool)]) {
    for (path, encrypted) in files {
        let label = if *encrypted {
            "encrypted"
        } else if path.file_name() == Some(std::ffi::OsStr::new(store::RECORD_STATE_FILE)) {
            "not encrypted, not secret"
        } else {
            "NOT encrypted"
        };
        println!("file:     {}  ({label})", path.display());
    }
}

fn print_store(ks: &KeyStore, files: &[(PathBuf, bool)]) {
    println!("peer id:  {}", ks.peer_id());
    println!(
        "identity: Ed25519, created {}",
        time::rfc3339(ks.identity_created_at())
    );
    for info in ks.key_info() {
        println!(
            "{}: {}  (created {})",
            info.suite,
            info.fingerprint,
            time::rfc3339(info.created_at)
        );
        if let Some((fp, retired_at)) = info.previous {
            println!(
                "  previous key {fp}, retired {}: records carry a rotation statement until {}",
                time::rfc3339(retired_at),
                time::rfc3339(retired_at.saturating_add(store::ROTATION_GRACE_SECS))
            );
        }
    }
    println!(
        "encrypted: {}",
        if ks.is_encrypted() {
            "yes (every key file)"
        } else {
            "no (no key file)"
        }
    );
    print_files(files);
}

fn generate(args: &StoreArgs, force: bool) -> anyhow::Result<ExitCode> {
    let dir = args.dir()?;
    let _lock = args.lock(&dir, "keys generate")?;
    let options = args.options(&dir, true)?;
    if options.suites.is_empty() {
        bail!("no suite selected");
    }
    let ks = if force {
        let (ks, backup) = KeyStore::generate_replacing(&dir, options)?;
        if let Some(backup) = backup {
            println!("previous keys backed up to {}", backup.display());
        }
        ks
    } else {
        KeyStore::generate(&dir, options)?
    };
    if !ks.is_encrypted() {
        eprintln!(
            "note: the keys are not encrypted; set {} or pass --passphrase-file to encrypt them",
            pqnode_keys::keyfile::ENV_PASSPHRASE
        );
    }
    print_store(&ks, &protection_of(&ks, args.insecure_permissions)?);
    Ok(ExitCode::SUCCESS)
}

fn show_json(ks: &KeyStore, files: &[(PathBuf, bool)]) -> ShowJson {
    ShowJson {
        peer_id: ks.peer_id().to_string(),
        suites: ks
            .key_info()
            .into_iter()
            .map(|i| SuiteJson {
                suite: i.suite.name().to_owned(),
                fingerprint: i.fingerprint.to_string(),
                created_at: time::rfc3339(i.created_at),
            })
            .collect(),
        files: files_json(files),
    }
}

fn files_json(files: &[(PathBuf, bool)]) -> Vec<FileJson> {
    files
        .iter()
        .map(|(path, encrypted)| FileJson {
            path: path.display().to_string(),
            encrypted: *encrypted,
        })
        .collect()
}

fn show(args: &StoreArgs, json: bool) -> anyhow::Result<ExitCode> {
    let ks = match args.open() {
        Ok(ks) => ks,
        Err(e) => {
            // A store that cannot be opened (mixed protection, say) is still
            // shown file by file, so the operator sees which file is which.
            if let Ok(files) = store::file_protection(&args.dir()?, args.insecure_permissions) {
                if json {
                    println!("{}", serde_json::json!({ "files": files_json(&files) }));
                } else {
                    print_files(&files);
                }
            }
            return Err(e);
        }
    };
    let files = protection_of(&ks, args.insecure_permissions)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&show_json(&ks, &files))?);
    } else {
        print_store(&ks, &files);
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: &StoreArgs, suite: Suite) -> anyhow::Result<ExitCode> {
    let dir = args.dir()?;
    let _lock = args.lock(&dir, "keys rotate")?;
    let mut options = args.options(&dir, false)?;
    if !options.suites.contains(&suite) {
        options.suites.push(suite);
    }
    let mut ks = KeyStore::open(&dir, options)?;
    let old = ks
        .key_info()
        .into_iter()
        .find(|i| i.suite == suite)
        .map(|i| i.fingerprint)
        .context("the suite has no key")?;
    let new = ks.rotate(suite, time::unix_now())?;
    println!("{suite}: rotated");
    println!("  old key {old}");
    println!("  new key {new}");
    println!(
        "records of the next {} days carry a rotation statement signed by the old key",
        store::ROTATION_GRACE_SECS / 86_400
    );
    Ok(ExitCode::SUCCESS)
}

fn export_record(
    args: &StoreArgs,
    out: &Path,
    suite: Option<Suite>,
    addrs: &[Multiaddr],
    validity: u64,
) -> anyhow::Result<ExitCode> {
    // Signing a record advances the persisted `seq`.
    let _lock = args.lock(&args.dir()?, "keys export-record")?;
    let mut ks = args.open()?;
    let suite = match suite {
        Some(s) => s,
        None => *ks
            .suites()
            .first()
            .context("the key store has no suite key")?,
    };
    let rec = ks.build_record(suite, addrs, time::unix_now(), validity)?;
    fsutil::write_atomic(out, rec.envelope_bytes())?;
    println!(
        "wrote {} ({} bytes): {suite} record of {}, seq {}, expires {}",
        out.display(),
        rec.envelope_bytes().len(),
        ks.peer_id(),
        rec.seq(),
        time::rfc3339(rec.expires_at())
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a record file: the binary envelope, or its hex (whitespace allowed).
/// Records are public, so any readable file (or symbolic link) will do; only
/// the size is bounded.
fn read_record_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    // Hex doubles the size; allow whitespace on top.
    let limit = 4 * record::MAX_ENVELOPE_LEN as u64;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!("{} is too large to be a record", path.display());
    }
    let text: Option<String> = std::str::from_utf8(&bytes)
        .ok()
        .map(|s| s.chars().filter(|c| !c.is_whitespace()).collect());
    match text {
        Some(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_hexdigit()) => {
            hex::decode(&t).with_context(|| format!("{}: odd-length hex", path.display()))
        }
        _ => Ok(bytes),
    }
}

fn verify_record(
    path: &Path,
    peer: Option<PeerId>,
    pinned: Option<Fingerprint>,
    now: Option<u64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = read_record_file(path)?;
    let enabled = Suite::ALL;
    let mut ctx = VerifyContext::new(now.unwrap_or_else(time::unix_now), &enabled);
    ctx.expected_peer = peer;
    ctx.pinned = pinned;
    match record::verify(&bytes, &ctx) {
        Ok(v) => {
            print_verified(&v, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{}: record does not verify: {e}", path.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn print_verified(v: &VerifiedRecord, json: bool) -> anyhow::Result<()> {
    if json {
        let out = RecordJson {
            peer_id: v.peer_id().to_string(),
            suite: v.suite().name().to_owned(),
            fingerprint: v.fingerprint().to_string(),
            seq: v.seq(),
            issued_at: time::rfc3339(v.issued_at()),
            expires_at: time::rfc3339(v.expires_at()),
            addrs: v.addrs().iter().map(ToString::to_string).collect(),
            rotated_from: v.rotated_from().map(|f| f.to_string()),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("record verifies");
    println!("peer id:     {}", v.peer_id());
    println!("suite:       {}", v.suite());
    println!("fingerprint: {}", v.fingerprint());
    println!("seq:         {}", v.seq());
    println!("issued:      {}", time::rfc3339(v.issued_at()));
    println!("expires:     {}", time::rfc3339(v.expires_at()));
    for a in v.addrs() {
        println!("address:     {a}");
    }
    if let Some(from) = v.rotated_from() {
        println!("rotated from {from}");
    }
    if let PinCheck::Rotated { from } = v.pin() {
        println!("the pinned key {from} vouches for this key (pin moves)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: KeysCommand,
    }

    fn store_args(dir: &Path) -> StoreArgs {
        StoreArgs {
            config: None,
            data_dir: Some(dir.to_path_buf()),
            passphrase_file: None,
            suites: None,
            insecure_permissions: false,
        }
    }

    #[test]
    fn parses_the_documented_commands() {
        let c = Cli::try_parse_from(["keys", "generate", "--data-dir", "/x", "--force"]).unwrap();
        assert!(matches!(
            c.command,
            KeysCommand::Generate { force: true, .. }
        ));
        let c = Cli::try_parse_from([
            "keys",
            "rotate",
            "--data-dir",
            "/x",
            "--suite",
            "mlkem1024-mldsa87",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            KeysCommand::Rotate {
                suite: Suite::Mlkem1024Mldsa87,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["keys", "rotate", "--suite", "nope"]).is_err());
        // there is no passphrase argument
        assert!(Cli::try_parse_from(["keys", "generate", "--passphrase", "secret"]).is_err());
    }

    #[test]
    fn show_json_has_the_documented_fields_and_no_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let args = store_args(&dir);
        assert_eq!(generate(&args, false).unwrap(), ExitCode::SUCCESS);
        let ks = args.open().unwrap();
        let files = protection_of(&ks, false).unwrap();
        let value = serde_json::to_value(show_json(&ks, &files)).unwrap();
        let obj = value.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["files", "peerId", "suites"]);
        assert_eq!(obj["peerId"], ks.peer_id().to_string());
        let suites = obj["suites"].as_array().unwrap();
        assert_eq!(suites.len(), 2);
        for s in suites {
            let s = s.as_object().unwrap();
            let mut keys: Vec<&str> = s.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["createdAt", "fingerprint", "suite"]);
            let fp = s["fingerprint"].as_str().unwrap();
            assert_eq!(fp.len(), 79);
            fp.parse::<Fingerprint>().unwrap();
            assert!(s["createdAt"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(obj["files"].as_array().unwrap().len(), 3);
        // no secret bytes anywhere in the output
        let text = serde_json::to_string(&value).unwrap();
        for suite in Suite::ALL {
            let secret = hex::encode(&ks.signing_key(suite).unwrap().expose_secret()[..16]);
            assert!(!text.contains(&secret));
        }
    }

    #[test]
    fn generate_show_rotate_export_verify() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let args = store_args(&dir);
        assert_eq!(generate(&args, false).unwrap(), ExitCode::SUCCESS);
        // a second generate refuses, --force keeps a backup
        assert!(generate(&args, false).is_err());
        assert_eq!(generate(&args, true).unwrap(), ExitCode::SUCCESS);
        assert!(std::fs::read_dir(&dir).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("backup-")
        }));
        assert_eq!(show(&args, true).unwrap(), ExitCode::SUCCESS);
        assert_eq!(
            rotate(&args, Suite::Kyber1024Dilithium5).unwrap(),
            ExitCode::SUCCESS
        );
        let out = tmp.path().join("record.bin");
        assert_eq!(
            export_record(&args, &out, None, &[], 3600).unwrap(),
            ExitCode::SUCCESS
        );
        assert_eq!(
            verify_record(&out, None, None, None, false).unwrap(),
            ExitCode::SUCCESS
        );
        // hex form too
        let hexed = tmp.path().join("record.hex");
        std::fs::write(&hexed, hex::encode(std::fs::read(&out).unwrap())).unwrap();
        assert_eq!(
            verify_record(&hexed, None, None, None, true).unwrap(),
            ExitCode::SUCCESS
        );
        // expired → non-zero
        assert_eq!(
            verify_record(&out, None, None, Some(u64::MAX), false).unwrap(),
            ExitCode::FAILURE
        );
        // another peer → non-zero
        let other = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        assert_eq!(
            verify_record(&out, Some(other), None, None, false).unwrap(),
            ExitCode::FAILURE
        );
    }
}
