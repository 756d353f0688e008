//! The cost of a watch's `filter` and `redact` per event, on the ~4 KiB benchmark object
//! with 1–3 spec fields changed (`benches/common`): what capture adds to each change.
//! Target: under 5 µs for a typical filter expression.
//!
//! `cargo bench --bench filter`

/// crbridge's allocator, so allocation-heavy stages cost what they cost in crbridge.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "common/mod.rs"]
mod common;

use crbridge::diff;
use crbridge::filter::{Filter, Input};
use crbridge::redact::{RedactKey, Redactor};
use crbridge_sink_api::ChangeKind;
use criterion::{criterion_group, criterion_main, Criterion};

fn filters(c: &mut Criterion) {
    let mut old = common::served_object("bench", 7, 1, 101);
    let mut new = common::served_object("bench", 7, 2, 102);
    diff::clean(&mut old);
    diff::clean(&mut new);
    let patch = diff::diff(&old, &new);
    let input = Input {
        kind: ChangeKind::Updated,
        object: &new,
        old_object: Some(&old),
        patch: Some(&patch),
    };
    for (name, source) in [
        // The typical one: a label or field of the new object.
        ("label equality", "object.metadata.labels.tier == 'prod'"),
        (
            "type and a field against the old object",
            "type == 'updated' && object.spec.field00 != oldObject.spec.field00",
        ),
        (
            "patch touches spec",
            "patch.exists(p, p.path.startsWith('/spec/'))",
        ),
    ] {
        let filter = Filter::new(source).expect("benchmark expressions compile");
        assert_eq!(filter.matches(&input), Ok(true), "{source}");
        c.bench_function(&format!("filter: {name}"), |b| {
            b.iter(|| filter.matches(std::hint::black_box(&input)))
        });
    }
}

fn redaction(c: &mut Criterion) {
    let mut object = common::served_object("bench", 7, 2, 102);
    diff::clean(&mut object);
    let redactor = Redactor::new(
        RedactKey::new(b"benchmark-redaction-key"),
        &[
            "/spec/field10".to_string(),
            "/metadata/labels/*".to_string(),
        ],
    );
    // Three values hashed (one field, two labels), on a copy as capture has one.
    c.bench_function("redact: 3 values (2 pointers, one with *)", |b| {
        b.iter_batched(
            || object.clone(),
            |mut o| redactor.apply(&mut o),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, filters, redaction);
criterion_main!(benches);
