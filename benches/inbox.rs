//! The inbox under a large backlog: what one `GET /api/messages` page costs
//! (time holding the inbox lock, which every delivery also needs), and what
//! a delivery costs, with 200 peers × 1024 undelivered messages of 64 bytes
//! (204,800 messages; the defaults allow up to 2000 × 1024).
//!
//! - `first-page`: the oldest 1000 messages;
//! - `last-page`: the 100 newest (`since` = 100 before the end), what a
//!   client polling for news asks;
//! - `one-peer`: the oldest 1000 of one peer (`from=`);
//! - `deliver`: one more message from an existing peer (its oldest dropped:
//!   the inbox is at its per-peer count).
//!
//! `cargo bench --bench inbox`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use libp2p::PeerId;
use pqnode::pq::{Inbox, PqMetrics, Security};

const PEERS: usize = 200;
const PQ: Security = Security::Pq {
    suite: pqnode_crypto::Suite::Kyber1024Dilithium5,
};
const PER_PEER: usize = 1024;

fn inbox(c: &mut Criterion) {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = PqMetrics::register(&mut registry);
    let inbox = Inbox::new(PER_PEER, 2000, 256 << 20, 32 << 20, 16 << 20, metrics);
    let peers: Vec<PeerId> = (0..PEERS).map(|_| PeerId::random()).collect();
    for _ in 0..PER_PEER {
        for p in &peers {
            inbox.deliver(*p, PQ, vec![0x42; 64]);
        }
    }
    let total = (PEERS * PER_PEER) as u64;
    let newest = inbox.list(None, 0, 1)[0].seq + total - 1;

    let mut g = c.benchmark_group("inbox/204800-messages");
    g.bench_function("first-page", |b| {
        b.iter(|| black_box(inbox.list(None, 0, 1000)))
    });
    g.bench_function("last-page", |b| {
        b.iter(|| black_box(inbox.list(None, newest - 100, 100)))
    });
    g.bench_function("one-peer", |b| {
        b.iter(|| black_box(inbox.list(Some(peers[7]), 0, 1000)))
    });
    g.bench_function("deliver", |b| {
        b.iter(|| inbox.deliver(peers[3], PQ, vec![0x42; 64]))
    });
    g.finish();
}

criterion_group!(benches, inbox);
criterion_main!(benches);
