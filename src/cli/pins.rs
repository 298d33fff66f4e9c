//! `pqnode pins list | add | remove`: the pins of PROTOCOL.md §8.3.
//!
//! While the node runs (it holds the data directory's lock), the commands go
//! through its API with the token from the data directory; while it is
//! stopped, they open the database directly (holding the lock themselves,
//! so a node cannot start in between).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args as ClapArgs, Subcommand};
use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::Fingerprint;
use pqnode_keys::db::{DEFAULT_FIRST_USE_LIMIT, PinDb, StateDb};
use pqnode_keys::lock::{DataDirLock, LockError};
use pqnode_keys::time::unix_now;

use super::config::NodeFlags;
use crate::api::pins::{AddPin, MAX_PAGE, PinJson, PinsResponse, Removed};
use crate::config::Config;

/// Arguments of `pqnode pins`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Where the node and its data live.
    #[command(flatten)]
    pub flags: NodeFlags,
    /// What to do.
    #[command(subcommand)]
    pub command: PinsCommand,
}

/// The `pqnode pins` subcommands.
#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// List every pin (peer, suite, fingerprint, source, since).
    List {
        /// Print JSON (the API's `PinJson` objects).
        #[arg(long)]
        json: bool,
        /// Only this peer's pins.
        #[arg(long, value_name = "PEER")]
        peer: Option<String>,
    },
    /// Pin PEER to FINGERPRINT (an operator pin: never limited or evicted).
    Add {
        /// The PeerId.
        peer: String,
        /// SHA-256 of its PQ signing key: 64 hex digits, spaces allowed.
        fingerprint: String,
        /// Only for this suite (default: every suite without its own pin).
        #[arg(long, value_name = "SUITE")]
        suite: Option<String>,
    },
    /// Remove PEER's pins (or only one suite's).
    Remove {
        /// The PeerId.
        peer: String,
        /// Only this suite's pin.
        #[arg(long, value_name = "SUITE")]
        suite: Option<String>,
    },
}

enum Target {
    /// The node runs: talk to its API.
    Api { config: Box<Config>, token: String },
    /// The node is stopped: the database, under our own lock.
    Db { pins: PinDb, _lock: DataDirLock },
}

fn target(config: Config) -> anyhow::Result<Target> {
    match DataDirLock::acquire(&config.data_dir, "pins", false) {
        Ok(lock) => {
            let db = StateDb::open(&config.data_dir, false)
                .with_context(|| format!("state database in {}", config.data_dir.display()))?;
            Ok(Target::Db {
                pins: db.pins(DEFAULT_FIRST_USE_LIMIT),
                _lock: lock,
            })
        }
        Err(LockError::Held { .. }) => {
            let path = config.data_dir.join(crate::api::auth::TOKEN_FILE);
            let token = crate::api::auth::read_token(&config.data_dir, false)
                .with_context(|| {
                    format!(
                        "the node runs, but its API token {} cannot be read",
                        path.display()
                    )
                })?
                .with_context(|| {
                    format!(
                        "the node runs, but it has no API token at {}",
                        path.display()
                    )
                })?
                .expose()
                .to_owned();
            Ok(Target::Api {
                config: Box::new(config),
                token,
            })
        }
        Err(e) => Err(e).context("data directory"),
    }
}

fn parse_peer(s: &str) -> anyhow::Result<PeerId> {
    s.parse().with_context(|| format!("not a PeerId: {s:?}"))
}

fn parse_suite(s: Option<&str>) -> anyhow::Result<Option<Suite>> {
    s.map(|s| s.parse::<Suite>().map_err(anyhow::Error::from))
        .transpose()
        .context("--suite")
}

/// Runs `pqnode pins`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.flags.load()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(config, args.command))
}

async fn run_async(config: Config, command: PinsCommand) -> anyhow::Result<ExitCode> {
    let target = target(config)?;
    match command {
        PinsCommand::List { json, peer } => {
            let only = peer.as_deref().map(parse_peer).transpose()?;
            let pins = list(&target, only).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pins)?);
            } else if pins.is_empty() {
                println!("no pins");
            } else {
                for p in &pins {
                    println!(
                        "{}  {:<22} {:<10} {}  {}",
                        p.peer_id,
                        p.suite.as_deref().unwrap_or("(every suite)"),
                        source_name(p),
                        pqnode_keys::time::rfc3339(p.pinned_at),
                        p.fingerprint
                    );
                }
            }
        }
        PinsCommand::Add {
            peer,
            fingerprint,
            suite,
        } => {
            let p = parse_peer(&peer)?;
            let fp: Fingerprint = fingerprint.parse().context("fingerprint")?;
            let s = parse_suite(suite.as_deref())?;
            match &target {
                Target::Db { pins, .. } => pins.add_operator(&p, s, fp, unix_now())?,
                Target::Api { config, token } => {
                    let body = serde_json::to_string(&AddPin {
                        peer_id: p.to_base58(),
                        fingerprint: fp.to_hex(),
                        suite: s.map(|s| s.name().to_owned()),
                    })?;
                    api(config, token, "POST", "/api/pins", Some(&body)).await?;
                }
            }
            println!(
                "pinned {p} ({}) to {fp}",
                s.map(|s| s.name()).unwrap_or("every suite")
            );
        }
        PinsCommand::Remove { peer, suite } => {
            let p = parse_peer(&peer)?;
            let s = parse_suite(suite.as_deref())?;
            let removed = match &target {
                Target::Db { pins, .. } => pins.remove(&p, s)?,
                Target::Api { config, token } => {
                    let mut path = format!("/api/pins/{}", p.to_base58());
                    if let Some(s) = s {
                        path.push_str(&format!("?suite={}", s.name()));
                    }
                    let body = api(config, token, "DELETE", &path, None).await?;
                    serde_json::from_str::<Removed>(&body)
                        .context("the API's answer")?
                        .removed
                }
            };
            if removed == 0 {
                bail!(
                    "{p} has no pin{}",
                    s.map(|s| format!(" for {s}")).unwrap_or_default()
                );
            }
            println!("removed {removed} pin(s) of {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One request to the running node's API. When nothing answers, the node
/// still holds its data directory, so it listens elsewhere: say so.
async fn api(
    config: &Config,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<String> {
    match crate::client::request(config.api, method, path, Some(token), body).await {
        Err(e @ crate::client::ClientError::Connect { .. }) => {
            Err(anyhow::Error::new(e).context(format!(
                "a node runs on {} (its lock is held) but its API is not at {}; \
                 give the --api or --config it was started with",
                config.data_dir.display(),
                config.api
            )))
        }
        r => Ok(r?),
    }
}

fn source_name(p: &PinJson) -> String {
    serde_json::to_value(p.source)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn list(target: &Target, only: Option<PeerId>) -> anyhow::Result<Vec<PinJson>> {
    match target {
        Target::Db { pins, .. } => {
            if let Some(p) = only {
                return Ok(pins
                    .pins_of(&p)?
                    .into_iter()
                    .map(|(suite, pin)| {
                        PinJson::from(&pqnode_keys::db::PinRow {
                            peer: p,
                            suite,
                            pin,
                        })
                    })
                    .collect());
            }
            let mut out = Vec::new();
            let mut after: Option<PeerId> = None;
            loop {
                let page = pins.list(after.as_ref(), MAX_PAGE)?;
                let done = page.len() < MAX_PAGE;
                after = page.last().map(|r| r.peer);
                out.extend(page.iter().map(PinJson::from));
                if done {
                    return Ok(out);
                }
            }
        }
        Target::Api { config, token } => {
            let mut out = Vec::new();
            let mut next: Option<String> = None;
            loop {
                let mut path = format!("/api/pins?limit={MAX_PAGE}");
                if let Some(p) = only {
                    path.push_str(&format!("&peer={}", p.to_base58()));
                }
                if let Some(n) = &next {
                    path.push_str(&format!("&after={n}"));
                }
                let body = api(config, token, "GET", &path, None).await?;
                let page: PinsResponse = serde_json::from_str(&body).context("the API's answer")?;
                out.extend(page.pins);
                match page.next {
                    Some(n) => next = Some(n),
                    None => return Ok(out),
                }
            }
        }
    }
}
