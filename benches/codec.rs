//! Codec hot paths of a seed: decoding a stream of request messages (what a
//! seed parses most), PeerState consuming the same stream, and building
//! piece headers for the zero-copy send path.
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringseed::wire::codec::{decode, piece_header, BlockRequest, Decoded, Message};
use std::hint::black_box;

const N: u32 = 4096;

fn request_stream() -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..N {
        Message::Request(BlockRequest {
            piece: i / 16,
            begin: (i % 16) * 16384,
            len: 16384,
        })
        .encode(&mut s);
    }
    s
}

fn bench_decode(c: &mut Criterion) {
    let stream = request_stream();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("decode_requests", |b| {
        b.iter(|| {
            let mut buf = black_box(&stream[..]);
            let mut sum = 0u64;
            while let Ok(Decoded::Message { msg, consumed }) = decode(buf, 1 << 20) {
                if let Message::Request(r) = msg {
                    sum += u64::from(r.len);
                }
                buf = &buf[consumed..];
            }
            sum
        })
    });
    g.bench_function("piece_header", |b| {
        b.iter(|| {
            let mut x = 0u8;
            for i in 0..N {
                x ^= piece_header(black_box(i / 16), black_box((i % 16) * 16384), 16384)[12];
            }
            x
        })
    });
    g.bench_function("encode_requests_vec", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(stream.len()),
            |out: &mut Vec<u8>| {
                for i in 0..N {
                    Message::Request(BlockRequest {
                        piece: i,
                        begin: 0,
                        len: 16384,
                    })
                    .encode(out);
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
