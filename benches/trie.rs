//! URI index lookups at 1k, 10k and 100k entries per match policy.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::router::trie::UriIndex;
use switchyard::wamp::MatchPolicy;

fn build(n: usize) -> UriIndex<u64> {
    let mut idx = UriIndex::default();
    for i in 0..n as u64 {
        idx.get_or_insert_with(MatchPolicy::Exact, &format!("com.example.app{}.topic{}", i % 100, i), || i);
        idx.get_or_insert_with(MatchPolicy::Prefix, &format!("com.example.app{}.pre{}", i % 100, i), || i);
        idx.get_or_insert_with(MatchPolicy::Wildcard, &format!("com.example..wild{i}"), || i);
    }
    idx
}

fn lookups(c: &mut Criterion) {
    let mut g = c.benchmark_group("uri_index");
    for n in [1_000usize, 10_000, 100_000] {
        let idx = build(n);
        let probe = n as u64 / 2;
        let exact = format!("com.example.app{}.topic{}", probe % 100, probe);
        let prefixed = format!("com.example.app{}.pre{}.sub.leaf", probe % 100, probe);
        let wild = format!("com.example.anything.wild{probe}");
        g.bench_with_input(BenchmarkId::new("publish_match_exact", n), &exact, |b, uri| {
            b.iter(|| {
                let mut hits = 0;
                idx.for_each_match(black_box(uri), |_, _| hits += 1);
                hits
            })
        });
        g.bench_with_input(BenchmarkId::new("publish_match_prefix", n), &prefixed, |b, uri| {
            b.iter(|| {
                let mut hits = 0;
                idx.for_each_match(black_box(uri), |_, _| hits += 1);
                hits
            })
        });
        g.bench_with_input(BenchmarkId::new("publish_match_wildcard", n), &wild, |b, uri| {
            b.iter(|| {
                let mut hits = 0;
                idx.for_each_match(black_box(uri), |_, _| hits += 1);
                hits
            })
        });
        g.bench_with_input(BenchmarkId::new("call_best_match_prefix", n), &prefixed, |b, uri| {
            b.iter(|| idx.best_match(black_box(uri)).map(|(_, v)| *v))
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
