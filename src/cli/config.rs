//! `pqnode config check`, and the configuration flags shared with `pqnode run`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args as ClapArgs, Subcommand};

use crate::config::{Config, Overrides};

/// The flags that set configuration keys. Each is also a TOML key and a
/// `PQNODE_*` variable (see [`crate::config`]); flags win. Values are
/// checked by the configuration, which names the key in its errors.
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct ConfigFlags {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "PQNODE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (`data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen multiaddr, repeatable (`listen`); port 0 allowed.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Vec<String>,
    /// API socket address (`api`), e.g. 127.0.0.1:7777.
    #[arg(long, value_name = "ADDR")]
    pub api: Option<String>,
    /// Allow a non-loopback `--api` address; every endpoint then needs the
    /// token (`api_allow_remote`).
    #[arg(long)]
    pub api_allow_remote: bool,
    /// Let our records carry loopback and private addresses
    /// (`publish_private_addrs`).
    #[arg(long)]
    pub publish_private_addrs: bool,
    /// Private mode: records without addresses, no gossip announcements,
    /// listen addresses not told to peers (`private`).
    #[arg(long)]
    pub private: bool,
    /// Peer to dial at start and redial, repeatable (`peers`).
    #[arg(long = "peer", value_name = "MULTIADDR")]
    pub peers: Vec<String>,
    /// Bootstrap peer, repeatable (`bootstrap`).
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<String>,
    /// Bootstrap peers to keep connected (`min_connected`).
    #[arg(long, value_name = "N")]
    pub min_connected: Option<String>,
    /// `node` or `bootstrap` (`role`).
    #[arg(long, value_name = "ROLE")]
    pub role: Option<String>,
    /// `required`, `preferred` or `disabled` (`pq.policy`).
    #[arg(long, value_name = "POLICY")]
    pub policy: Option<String>,
    /// Suites in preference order, comma-separated (`pq.suites`).
    #[arg(long, value_name = "LIST")]
    pub suites: Option<String>,
    /// Accept peers without a preloaded pin: true or false (`pq.allow_unpinned`).
    #[arg(long, value_name = "BOOL")]
    pub allow_unpinned: Option<String>,
    /// mDNS discovery: true or false (`mdns`).
    #[arg(long, value_name = "BOOL")]
    pub mdns: Option<String>,
    /// Act as a circuit relay: true or false (`relay_server`).
    #[arg(long, value_name = "BOOL")]
    pub relay_server: Option<String>,
    /// Idle connection timeout in seconds (`idle_timeout_secs`).
    #[arg(long, value_name = "SECS")]
    pub idle_timeout_secs: Option<String>,
    /// `human` or `json` (`log_format`).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

/// The flags of a command that works with a node's data or its running
/// API (`pqnode pins`, `pqnode keys`): where the configuration and data
/// are, resolved exactly as `pqnode run` resolves them. Global, so they may
/// come before or after the subcommand.
#[derive(Debug, Clone, Default, ClapArgs)]
pub struct NodeFlags {
    /// TOML configuration file (its `data_dir` and `api` are used).
    #[arg(long, value_name = "FILE", env = "PQNODE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (`data_dir`).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// API socket address of the running node (`api`).
    #[arg(long, value_name = "ADDR", global = true)]
    pub api: Option<String>,
}

impl NodeFlags {
    /// The configuration these flags, `PQNODE_*` and the file give.
    pub fn load(&self) -> anyhow::Result<Config> {
        load_for(&ConfigFlags {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            api: self.api.clone(),
            ..ConfigFlags::default()
        })
    }
}

impl ConfigFlags {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Result<Overrides, crate::config::ConfigError> {
        let mut o = Overrides::default();
        if let Some(d) = &self.data_dir {
            o.set("data_dir", d.to_string_lossy())?;
        }
        o.set_list("listen", self.listen.clone())?;
        if self.api_allow_remote {
            o.set("api_allow_remote", "true")?;
        }
        if self.publish_private_addrs {
            o.set("publish_private_addrs", "true")?;
        }
        if self.private {
            o.set("private", "true")?;
        }
        o.set_list("peers", self.peers.clone())?;
        o.set_list("bootstrap", self.bootstrap.clone())?;
        let singles = [
            ("api", &self.api),
            ("min_connected", &self.min_connected),
            ("role", &self.role),
            ("pq.policy", &self.policy),
            ("pq.suites", &self.suites),
            ("pq.allow_unpinned", &self.allow_unpinned),
            ("mdns", &self.mdns),
            ("relay_server", &self.relay_server),
            ("idle_timeout_secs", &self.idle_timeout_secs),
            ("log_format", &self.log_format),
        ];
        for (key, value) in singles {
            if let Some(v) = value {
                o.set(key, v.clone())?;
            }
        }
        Ok(o)
    }

    /// Loads and validates the configuration: flags, then `PQNODE_*`
    /// variables, then the file, then defaults.
    pub fn load(&self) -> Result<Config, crate::config::ConfigError> {
        Config::load(self.config.as_deref(), &self.overrides()?)
    }
}

/// Arguments of `pqnode config`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `pqnode config` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration (file, environment and flags) without starting.
    Check(ConfigFlags),
}

/// Runs `pqnode config …`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Check(flags) => match flags.load() {
            Ok(config) => {
                println!("configuration OK");
                print_summary(&config);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("configuration error: {e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

fn print_summary(c: &Config) {
    let list = |v: &[libp2p::Multiaddr]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  data_dir      {}", c.data_dir.display());
    println!("  listen        {}", list(&c.listen));
    println!(
        "  api           {}{}",
        c.api,
        if c.api_allow_remote {
            " (remote allowed: token on every endpoint)"
        } else {
            ""
        }
    );
    println!("  peers         {}", list(&c.peers));
    println!(
        "  bootstrap     {} (min_connected {})",
        list(&c.bootstrap),
        c.min_connected
    );
    println!("  role          {}", c.role.as_str());
    println!("  pq.policy     {}", c.pq.policy);
    println!(
        "  pq.suites     {}",
        c.pq.suites
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  trusted_peers {}", c.trusted_peers.len());
    println!("  mdns          {}", c.mdns);
    println!("  relay_server  {}", c.relay_server);
    println!("  log_format    {}", c.log_format.as_str());
}

/// Loads the configuration for a subcommand, with context for the error.
pub fn load_for(flags: &ConfigFlags) -> anyhow::Result<Config> {
    flags.load().context("invalid configuration")
}
