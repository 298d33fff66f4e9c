//! Two real pqnodes on 127.0.0.1, started through `pqnode run`'s library
//! path: the time from dial to an established PQ session (TCP, Noise, Yamux,
//! the PQ handshake with record verification on both sides), and the time to
//! deliver one message through a PQ session (fragmentation, sealing, the
//! stream, opening, reassembly, the inbox).
//!
//! Completion is observed by polling with `yield_now`, so the numbers include
//! up to a few microseconds of observation delay, never a timer tick.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use pqnode::app::{App, AppOptions};
use pqnode::config::Config;

const LIMIT: Duration = Duration::from_secs(20);

async fn node(dir: &std::path::Path) -> App {
    let config = Config::from_toml_str(&format!(
        r#"
        data_dir = "{}"
        listen = ["/ip4/127.0.0.1/tcp/0"]
        api = "127.0.0.1:0"
        mdns = false
        [limits]
        max_new_connections_per_ip_per_minute = 100000
        max_connections_per_ip = 1000
        "#,
        dir.display()
    ))
    .expect("config");
    App::start(&config, AppOptions::default())
        .await
        .expect("node")
}

async fn spin_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "benchmark step did not finish within {LIMIT:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, b) = rt.block_on(async { (node(da.path()).await, node(db.path()).await) });
    let (pa, pb) = (a.pq().clone(), b.pq().clone());
    let b_id: PeerId = b.node().peer_id();
    let a_id: PeerId = a.node().peer_id();
    let b_addr = b.listen_addrs()[0].clone().with(Protocol::P2p(b_id));

    let mut g = c.benchmark_group("node/dial-to-pq-session");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let mut retries = 0u32;
    g.bench_function("kyber1024-dilithium5 over TCP loopback", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Start from no connection at all, on both sides, for 50 ms
                    // in a row (AutoNAT dial-backs may reconnect the two nodes:
                    // then disconnect again).
                    let t = loop {
                        let deadline = Instant::now() + LIMIT;
                        let mut quiet_since: Option<Instant> = None;
                        loop {
                            assert!(
                                Instant::now() < deadline,
                                "the nodes never stayed disconnected"
                            );
                            let a_sees = a
                                .node()
                                .peers()
                                .await
                                .expect("peers")
                                .iter()
                                .any(|p| p.peer_id == b_id);
                            let b_sees = b
                                .node()
                                .peers()
                                .await
                                .expect("peers")
                                .iter()
                                .any(|p| p.peer_id == a_id);
                            if a_sees
                                || b_sees
                                || pa.session(&b_id).is_some()
                                || pb.session(&a_id).is_some()
                            {
                                let _ = a.node().disconnect(b_id).await;
                                let _ = b.node().disconnect(a_id).await;
                                quiet_since = None;
                            } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
                                >= Duration::from_millis(50)
                            {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(2)).await;
                        }
                        let t = Instant::now();
                        match a.node().dial(b_addr.clone()).await {
                            Ok(outcome) if !outcome.already_connected => break t,
                            // Refused by the limits right after a close, or a
                            // dial-back got there first: not timed, try again.
                            _ => {
                                retries += 1;
                                assert!(retries < 1000, "dials keep failing");
                            }
                        }
                    };
                    spin_until(|| pa.session(&b_id).is_some() && pb.session(&a_id).is_some()).await;
                    total += t.elapsed();
                }
                total
            })
        })
    });
    g.finish();
    println!("node/dial-to-pq-session: {retries} refused dials retried (not timed)");

    let mut g = c.benchmark_group("node/message-through-pq-session");
    g.sample_size(20);
    for size in [64usize, 64 * 1024, 1 << 20] {
        g.throughput(Throughput::Bytes(size as u64));
        let body = vec![0x42u8; size];
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |bench, body| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    if pa.session(&b_id).is_none() {
                        a.node().dial(b_addr.clone()).await.expect("dial");
                        spin_until(|| pa.session(&b_id).is_some() && pb.session(&a_id).is_some())
                            .await;
                    }
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let since = pb
                            .inbox()
                            .list(Some(a_id), 0, usize::MAX)
                            .last()
                            .map(|m| m.seq)
                            .unwrap_or(0);
                        let t = Instant::now();
                        pa.send(b_id, body.clone()).await.expect("send");
                        spin_until(|| !pb.inbox().list(Some(a_id), since, 1).is_empty()).await;
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
    }
    g.finish();
    rt.block_on(async {
        let _ = a.shutdown(Duration::from_secs(4)).await;
        let _ = b.shutdown(Duration::from_secs(4)).await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
