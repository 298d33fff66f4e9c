//! A flood of 10,000 DHT records, valid and forged, from a stock Kademlia
//! client, against a bootstrap node started the way `pqnode run` starts it:
//! the records are verified off the swarm's event loop, so `/api/health`
//! keeps answering quickly throughout, and every record is accounted for,
//! stored or rejected (issue 20).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol};
use pqnode_crypto::Suite;
use pqnode_keys::record::{RecordParams, build, dht_key};

const RECORDS: usize = 10_000;
/// Distinct signed records; the rest are copies of them with one bit
/// flipped (each costs the node a full signature verification to refuse).
const VALID: usize = 500;
/// PUTs in flight at once from the client (below the 32 inbound streams a
/// Kademlia connection handler keeps).
const IN_FLIGHT: usize = 16;
/// The bound for `/api/health` is 50 ms; asserted at 5×.
const HEALTH_BOUND: Duration = Duration::from_millis(250);

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A signed PQ record of `identity` (no addresses, valid for an hour).
fn signed_record(identity: &libp2p::identity::Keypair, suite: Suite, now: u64) -> kad::Record {
    let signing = pqnode_crypto::sign::SigningKey::generate(suite).unwrap();
    let value = build(
        identity,
        &signing,
        None,
        &RecordParams {
            seq: 1,
            issued_at: now,
            expires_at: now + 3600,
            addrs: &[],
        },
    )
    .unwrap()
    .envelope_bytes()
    .to_vec();
    kad::Record::new(dht_key(suite, &identity.public().to_peer_id()), value)
}

/// A stock Kademlia client (pqnode's protocol) that knows `target` at `addr`.
fn kad_client(
    identity: libp2p::identity::Keypair,
    target: libp2p::PeerId,
    addr: Multiaddr,
) -> libp2p::Swarm<kad::Behaviour<MemoryStore>> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(identity)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| {
            let id = k.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                MemoryStore::new(id),
                kad::Config::new(StreamProtocol::new("/pqnode/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Client));
            kad
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    swarm.behaviour_mut().add_address(&target, addr);
    swarm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_dht_records_leaves_health_answering_quickly() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.role = pqnode::config::Role::Bootstrap;
        let node = start_node(&config).await;
        let target = node.node().peer_id();
        let addr = without_p2p(&tcp_addr(&node));
        let api = node.api_addr();

        // The records, built before the flood (signing is the client's cost).
        let suite = Suite::Mlkem1024Mldsa87;
        let now = unix_now();
        let mut records = Vec::with_capacity(RECORDS);
        for _ in 0..VALID {
            let identity = libp2p::identity::Keypair::generate_ed25519();
            records.push(signed_record(&identity, suite, now));
        }
        for i in VALID..RECORDS {
            let mut forged = records[i % VALID].clone();
            let at = (i * 7919) % forged.value.len();
            forged.value[at] ^= 1 << (i % 8);
            records.push(forged);
        }

        // /api/health, polled throughout.
        let flooding = Arc::new(AtomicBool::new(true));
        let poller = {
            let flooding = flooding.clone();
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                let mut polls = 0u32;
                while flooding.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = http(api, "GET", "/api/health", None, None).await;
                    let took = t.elapsed();
                    assert!(r.status == 200 || r.status == 503, "{}", r.body);
                    worst = worst.max(took);
                    polls += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (worst, polls)
            })
        };

        // The flood: PUT straight to the node, IN_FLIGHT at a time.
        let mut client = kad_client(
            libp2p::identity::Keypair::generate_ed25519(),
            target,
            addr.clone(),
        );
        let started = Instant::now();
        let (mut sent, mut done) = (0usize, 0usize);
        let mut queue = records.into_iter();
        while done < RECORDS {
            while sent - done < IN_FLIGHT {
                let Some(record) = queue.next() else { break };
                client.behaviour_mut().put_record_to(
                    record,
                    std::iter::once(target),
                    kad::Quorum::One,
                );
                sent += 1;
            }
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::PutRecord(_),
                step,
                ..
            }) = client.select_next_some().await
                && step.last
            {
                done += 1;
            }
        }
        let flood = started.elapsed();

        // Every record accounted for: stored, or rejected.
        let counted = |body: &str, name: &str| -> u64 {
            body.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        let (stored, rejected) = eventually(|| async {
            let m = http(api, "GET", "/metrics", None, None).await.body;
            let stored = counted(&m, "pqnode_node_dht_records_stored_total");
            let rejected = counted(&m, "pqnode_node_dht_records_rejected_total");
            (stored + rejected == RECORDS as u64).then_some((stored, rejected))
        })
        .await;
        flooding.store(false, Ordering::Relaxed);
        let (worst, polls) = poller.await.expect("the health poller");
        println!(
            "{RECORDS} PUTs in {flood:?}: {stored} stored, {rejected} rejected; \
             /api/health polled {polls} times, slowest {worst:?}"
        );
        assert!(stored >= 1, "valid records are stored");
        // Issue 29, item 6: one source stores at most its share of other
        // authors' records, however many valid ones it brings.
        assert!(
            stored <= pqnode::node::record_quota::PER_PEER as u64,
            "one source stored {stored} records of others"
        );

        // An author's own record is still stored after the flood.
        let own = libp2p::identity::Keypair::generate_ed25519();
        let record = signed_record(&own, suite, now);
        let mut author = kad_client(own, target, addr);
        author
            .behaviour_mut()
            .put_record_to(record, std::iter::once(target), kad::Quorum::One);
        loop {
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::PutRecord(_),
                step,
                ..
            }) = author.select_next_some().await
                && step.last
            {
                break;
            }
        }
        eventually(|| async {
            let m = http(api, "GET", "/metrics", None, None).await.body;
            (counted(&m, "pqnode_node_dht_records_stored_total") == stored + 1).then_some(())
        })
        .await;
        assert!(
            rejected >= (RECORDS - VALID) as u64,
            "every forged record is rejected"
        );
        assert!(polls >= 10, "health was polled throughout");
        assert!(
            worst < HEALTH_BOUND,
            "/api/health took {worst:?} during the flood"
        );
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}
