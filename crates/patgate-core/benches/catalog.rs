//! Benchmark of endpoint matching over the full built-in catalog (1,400+ templates).
//!
//! Requests: a fixed set of realistic client paths (ids and URL-encoded full paths, query
//! strings, deep nesting, literal-vs-parameter clashes, catch-alls, unmatched paths).
//! Measures `Catalog::find` (route match) and `Catalog::request` (match + boundary
//! decoding), per request; baseline in the same run: one `HashMap<&str, usize>` lookup of
//! the path string (what an exact-match table would cost).
//!
//! Run: `cargo bench -p patgate-core --bench catalog`.

#![expect(clippy::expect_used, reason = "a benchmark without its catalog has nothing to measure")]

use std::{collections::HashMap, hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use patgate_core::{
    Resources,
    catalog::{Catalog, DecodeBuffer},
};

const REQUESTS: &[(&str, &str)] = &[
    ("GET", "/api/v4/projects/acme%2Fplatform%2Fapi/merge_requests/7"),
    ("PUT", "/api/v4/projects/4321/merge_requests/7"),
    ("POST", "/api/v4/projects/4321/merge_requests/7/notes"),
    ("GET", "/api/v4/projects/acme%2Fapi/repository/files/src%2Fmain.rs/raw?ref=main"),
    ("GET", "/api/v4/projects/17/issues?state=opened&per_page=100"),
    ("POST", "/api/v4/projects/17/issues/42/award_emoji"),
    ("GET", "/api/v4/projects/17/pipelines/991/jobs"),
    ("POST", "/api/v4/projects/17/jobs/8812/retry"),
    ("GET", "/api/v4/projects/17/jobs/8812/artifacts/dist/app/main.js"),
    ("GET", "/api/v4/projects/17/registry/repositories/3/tags/latest"),
    ("PUT", "/api/v4/projects/17/packages/generic/app/1.2.3/app.tar.gz"),
    ("GET", "/api/v4/groups/acme%2Fplatform/members/all"),
    ("GET", "/api/v4/groups/12/variables/DEPLOY_KEY"),
    ("GET", "/api/v4/personal_access_tokens/self"),
    ("POST", "/api/v4/personal_access_tokens/55/rotate"),
    ("GET", "/api/v4/user/keys"),
    ("GET", "/api/v4/users/alice/gpg_keys"),
    ("GET", "/api/v4/version"),
    ("PUT", "/api/v4/application/settings"),
    ("HEAD", "/api/v4/projects/17/repository/archive.zip?sha=main"),
    ("GET", "/api/v4/projects/17/environments/5/deployments"),
    ("DELETE", "/api/v4/projects/17/protected_branches/main"),
    ("GET", "/api/v4/does/not/exist"),
    ("PATCH", "/api/v4/projects/17/nothing_here/1"),
];

fn bench(c: &mut Criterion) {
    let resources = Resources::builtin().expect("resource table");
    let catalog = Catalog::builtin(&resources).expect("endpoint catalog");
    assert!(catalog.entries().len() >= 1000, "the full catalog is loaded");
    let table: HashMap<&str, usize> = REQUESTS.iter().enumerate().map(|(index, (_, path))| (*path, index)).collect();
    let mut group = c.benchmark_group("catalog");
    group.measurement_time(Duration::from_secs(4));
    // Each iteration is one request, taken in turn from the set: times are per request.
    let mut next = 0;
    let mut take = move || {
        next = (next + 1) % REQUESTS.len();
        REQUESTS[next]
    };
    group.bench_function("find", |b| {
        b.iter(|| {
            let (method, path) = take();
            black_box(catalog.find(black_box(method), black_box(path)).map(|found| found.entry.line))
        })
    });
    group.bench_function("request (match + boundary decoding)", |b| {
        b.iter(|| {
            let (method, path) = take();
            let mut buffer = DecodeBuffer::default();
            black_box(catalog.request(black_box(method), black_box(path), &mut buffer).operation);
        })
    });
    group.bench_function("baseline: HashMap<&str> exact lookup", |b| {
        b.iter(|| {
            let (_, path) = take();
            black_box(table.get(black_box(path)).copied())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
