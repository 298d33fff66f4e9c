//! Connection trimming on a real node: above high water it closes peers
//! down to low water after the grace period, and keeps a peer with a
//! pinned PQ session.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::swarm::dummy;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_high_water_peers_are_trimmed_to_low_water_and_protected_ones_stay() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (dn, dp) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut config = test_config(dn.path());
        config.limits.high_water = 20;
        config.limits.low_water = 10;
        config.limits.trim_grace = Duration::from_secs(2);
        config.limits.max_connections_per_ip = 100;
        config.limits.max_new_connections_per_ip_per_minute = 1000;
        let n = start_pq_node(&config).await;

        // A peer with a pinned PQ session: protected.
        let mut pc = test_config(dp.path());
        pc.peers = vec![tcp_addr(&n)];
        let p = start_pq_node(&pc).await;
        n.pq()
            .wait_for_session(&p.peer_id(), Duration::from_secs(10))
            .await
            .expect("PQ session");
        assert!(n.pq().is_pinned(&p.peer_id()));

        // 30 plain libp2p peers connect.
        let target = tcp_addr(&n);
        let mut tasks = Vec::new();
        for _ in 0..30 {
            let mut swarm = stock_swarm(|_| dummy::Behaviour);
            swarm.dial(target.clone()).unwrap();
            tasks.push(tokio::spawn(async move {
                loop {
                    swarm.select_next_some().await;
                }
            }));
        }
        // Above high water first...
        eventually(|| {
            let node = n.node().clone();
            async move { node.peers().await.ok().filter(|p| p.len() > 20) }
        })
        .await;
        // ...then, after the grace period, at most low water, P among them.
        let left = eventually(|| {
            let node = n.node().clone();
            async move { node.peers().await.ok().filter(|p| p.len() <= 10) }
        })
        .await;
        assert!(
            left.iter().any(|i| i.peer_id == p.peer_id()),
            "the pinned PQ peer was trimmed"
        );
        let metrics = http(n.api_addr(), "GET", "/metrics", None, None).await.body;
        let trimmed: u64 = metrics
            .lines()
            .find(|l| l.starts_with("pqnode_discovery_connections_trimmed_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .expect("trim counter");
        assert!(trimmed >= 21, "trimmed {trimmed}");
        // It stays there.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(n.node().peers().await.unwrap().len() <= 10);
        for t in tasks {
            t.abort();
        }
        p.shutdown(Duration::from_secs(4)).await.unwrap();
        n.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}
