//! Runs one template workload in a loop, for profiling under `valgrind --tool=callgrind`
//! (instruction counts are stable on a busy machine, unlike wall-clock time).
//!
//! ```text
//! cargo build --profile bench -p prompt-templates --example profile_loop
//! valgrind --tool=callgrind target/release/examples/profile_loop cold|render|warm [N]
//! ```
//!
//! Run it with N and with 0: the difference divided by N is the cost of one iteration.
//! (Under valgrind SHA-256 runs its portable code, not the SHA instructions it uses natively,
//! so a cold load counts about 185k instructions more than it executes natively.)

use std::hint::black_box;
use std::path::PathBuf;

use prompt_templates::{TemplateStore, Vars, VersionReq};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "cold".to_owned());
    let n: usize = args.next().map_or(Ok(1000), |s| s.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("templates");
    let text = std::fs::read_to_string(root.join("examples/chapter1.yaml"))?;
    let vars: Vars = serde_saphyr::from_str(&text)?;
    let store = TemplateStore::open(&dir)?;
    let template = store.load("writer", "write_chapter", VersionReq::Latest)?;
    match what.as_str() {
        "cold" => {
            for _ in 0..n {
                let store = TemplateStore::open(&dir)?;
                black_box(store.load("writer", "write_chapter", VersionReq::Exact(1))?);
            }
        }
        "warm" => {
            for _ in 0..n {
                black_box(store.load(
                    black_box("writer"),
                    black_box("write_chapter"),
                    VersionReq::Latest,
                )?);
            }
        }
        "render" => {
            for _ in 0..n {
                black_box(template.render(black_box(&vars))?);
            }
        }
        other => return Err(format!("unknown workload {other:?}: cold, warm or render").into()),
    }
    Ok(())
}
