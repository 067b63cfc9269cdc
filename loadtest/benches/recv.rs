//! Receive/parse path of a synthetic leecher: a stream of 16 KiB piece
//! messages fed through `Leecher::handle_data` in 256 KiB reads (what the
//! epoll driver does), in bytes per second on one core. Baseline beside it:
//! `ringseed::wire::decode` over the same bytes (parse-only, no bookkeeping).
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringseed_loadtest::testkit::{recv_fixture, RecvFixture};

fn recv(c: &mut Criterion) {
    let RecvFixture { stream, make } = recv_fixture(64);
    let mut g = c.benchmark_group("recv");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("leecher_handle_data_256k_reads", |b| {
        b.iter_batched(
            &make,
            |(mut leecher, mut stats)| {
                let now = Instant::now();
                let mut leftover: Vec<u8> = Vec::new();
                let mut buf = Vec::with_capacity(300 * 1024);
                for chunk in stream.chunks(256 * 1024) {
                    buf.clear();
                    buf.extend_from_slice(&leftover);
                    buf.extend_from_slice(chunk);
                    let n = leecher.handle_data(now, &buf, &mut stats).unwrap_or(0);
                    leftover.clear();
                    leftover.extend_from_slice(&buf[n..]);
                }
                stats.payload_bytes
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let s: Arc<Vec<u8>> = Arc::new(stream.clone());
    g.bench_function("wire_decode_baseline", |b| {
        b.iter(|| {
            let mut pos = 0;
            let mut n = 0u64;
            while let Ok(ringseed::wire::Decoded::Message { consumed, .. }) =
                ringseed::wire::decode(&s[pos..], 1 << 20)
            {
                pos += consumed;
                n += 1;
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, recv);
criterion_main!(benches);
