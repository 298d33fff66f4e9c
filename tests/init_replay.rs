//! Per-peer handshake limits under a replay (§9 rev 3), alone in its test
//! binary: the memory check reads this process's RSS, which other tests
//! running beside it would disturb.

mod pqsupport;

use std::time::Duration;

use futures::AsyncWriteExt;
use pqnode::pq::PQ_PROTOCOL;
use pqnode::pq::framing::write_frame;
use pqnode::pq::policy::RefuseReason;
use pqnode_crypto::handshake::Initiator;
use pqnode_crypto::rng::system_rng;
use pqnode_keys::store::{KeyStore, StoreOptions};
use pqsupport::{Opts, TEST_TIMEOUT, hostile_config, start, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound");
}

/// The resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .expect("VmRSS in /proc/self/status")
}

/// A peer that replays one valid Init on new streams as fast as it can,
/// abandoning each: its handshakes beyond the per-peer limits are answered
/// `busy` without PQ work, the abandoned ones count as failures, and it is
/// disconnected as `abusive`; an honest peer connecting meanwhile gets its session
/// within 2 s (asserted at 5×), and the process's memory stays within 10 %
/// (§9 rev 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_replayed_at_full_speed_gets_its_peer_disconnected_while_others_are_served() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        let dh = tempdir();
        let mut own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
        let own2 = KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
        let cfg = hostile_config(&own2, &mut own, false);
        let (_, init) =
            Initiator::start(cfg, &a.peer_id.to_bytes(), &mut system_rng()).expect("start");
        let (replayer, _listing) =
            pqsupport::raw_peer_listing_pq(own.identity().clone(), a.full_addr()).await;
        assert!(replayer.wait_connected(WAIT).await);
        let rss_before = rss_kib();
        let abusive_before = a.pq.metrics().refused_count(RefuseReason::Abusive);

        // The replay, on its own task: new stream, the same Init, next.
        let control = replayer.control.clone().expect("control");
        let target = a.peer_id;
        let replay = tokio::spawn(async move {
            let mut sent = 0u32;
            while sent < 5_000 {
                let mut c = control.clone();
                let Ok(Ok(mut s)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    c.open_stream(target, PQ_PROTOCOL),
                )
                .await
                else {
                    break;
                };
                if write_frame(&mut s, &init).await.is_err() {
                    break;
                }
                sent += 1;
                // Abandoned at once: the next one follows.
                let _ = s.close().await;
            }
            sent
        });

        // Meanwhile an honest peer connects.
        let t = std::time::Instant::now();
        b.connect(&a).await;
        assert!(
            b.pq.wait_for_session(&a.peer_id, Duration::from_secs(10))
                .await
                .is_some(),
            "an honest peer gets a session while the replay runs"
        );
        let honest = t.elapsed();

        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::Abusive)
                > abusive_before)
                .await,
            "the replaying peer is refused as abusive, and counted"
        );
        assert!(
            replayer.until_disconnected(WAIT).await,
            "the replaying peer is disconnected"
        );
        let sent = tokio::time::timeout(WAIT, replay)
            .await
            .expect("the replay ends with its connection")
            .expect("replay task");
        let rss_after = rss_kib();
        let started = a.pq.metrics().handshakes_started.get();
        println!(
            "replayed Init {sent} times; A started {started} handshakes in all; \
             honest session after {honest:?}; RSS {rss_before} -> {rss_after} KiB"
        );
        assert!(honest < Duration::from_secs(10));
        assert!(
            rss_after <= rss_before + rss_before / 10,
            "RSS grew from {rss_before} to {rss_after} KiB"
        );
        b.stop().await;
        a.stop().await;
    })
    .await;
}
