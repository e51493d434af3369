//! Template benchmarks: cold load (open + read + parse + compile), warm load (from memory),
//! load by label (labels.toml read, then memory), and rendering `writer/write_chapter` with the variables of `examples/chapter1.yaml`.
//!
//! Wall-clock figures move with the machine's load; for instruction counts run the same
//! workloads from `examples/profile_loop.rs` under `valgrind --tool=callgrind`.

#![allow(missing_docs)] // `criterion_group!` generates an undocumented public function

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use prompt_templates::{TemplateStore, Vars, VersionReq};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chapter_vars() -> Vars {
    let path = root().join("examples/chapter1.yaml");
    let text = std::fs::read_to_string(&path).expect("examples/chapter1.yaml is readable");
    serde_saphyr::from_str(&text).expect("examples/chapter1.yaml is a map of variables")
}

fn templates(c: &mut Criterion) {
    let dir = root().join("templates");
    let mut group = c.benchmark_group("templates");

    group.bench_function("cold_load", |b| {
        b.iter(|| {
            let store = TemplateStore::open(&dir).expect("templates/ opens");
            black_box(
                store
                    .load("writer", "write_chapter", VersionReq::Exact(1))
                    .expect("write_chapter loads"),
            )
        });
    });

    let store = TemplateStore::open(&dir).expect("templates/ opens");
    store
        .load("writer", "write_chapter", VersionReq::Latest)
        .expect("write_chapter loads");
    group.bench_function("warm_load", |b| {
        b.iter(|| {
            black_box(
                store
                    .load(
                        black_box("writer"),
                        black_box("write_chapter"),
                        VersionReq::Latest,
                    )
                    .expect("write_chapter is cached"),
            )
        });
    });

    // A label is read from labels.toml at every load (so a label moved by another process
    // counts at once), then the version is served from memory.
    let labelled = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(labelled.path().join("writer")).expect("mkdir");
    std::fs::copy(
        dir.join("writer/write_chapter_v1.yaml"),
        labelled.path().join("writer/write_chapter_v1.yaml"),
    )
    .expect("copy");
    let label_store = TemplateStore::open(labelled.path()).expect("opens");
    label_store
        .set_label("writer", "write_chapter", "production", 1)
        .expect("label");
    group.bench_function("label_load", |b| {
        b.iter(|| {
            black_box(
                label_store
                    .load(
                        "writer",
                        "write_chapter",
                        VersionReq::Label(black_box("production").to_owned()),
                    )
                    .expect("production loads"),
            )
        });
    });

    let template = store
        .load("writer", "write_chapter", VersionReq::Latest)
        .expect("write_chapter loads");
    let vars = chapter_vars();
    group.bench_function("render_write_chapter", |b| {
        b.iter(|| black_box(template.render(black_box(&vars)).expect("renders")));
    });
    group.finish();
}

criterion_group!(benches, templates);
criterion_main!(benches);
