//! Record layer: seal + open of one data record at 64 B, 1 KiB and the
//! largest record body (65535 bytes: 64 KiB of plaintext with its kind byte).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pqnode_crypto::Secret;
use pqnode_crypto::channel::{KeyUpdatePolicy, MAX_BODY, Opener, Sealer};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("channel/seal+open");
    for size in [64usize, 1024, MAX_BODY] {
        group.throughput(Throughput::Bytes(size as u64));
        let body = vec![0xa5u8; size];
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            let ts = || Secret::<64>::from_slice(&[9u8; 64]).expect("64 bytes");
            let mut sealer = Sealer::new(ts(), KeyUpdatePolicy::default()).expect("sealer");
            let mut opener = Opener::new(ts()).expect("opener");
            let mut out = Vec::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                sealer.seal_data(body, 0, &mut out).expect("seal");
                black_box(opener.open(&out[4..]).expect("open"));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
