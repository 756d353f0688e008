//! What sled 0.34 alone costs in memory, without crbridge: `objects` values of 4,000 bytes
//! inserted into one tree (keys shaped like crbridge's object keys), flushed every 1,000,
//! with the page cache set to `cache-bytes`; prints the process RSS after the inserts and
//! after two idle seconds. The lower bound of what crbridge's object states cost in memory.
//!
//! `cargo run --release --example bench_sled -- [objects] [cache-bytes]`

#[path = "../benches/common/mod.rs"]
mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (objects, cache) = (arg(1, 100_000), arg(2, 8 << 20));
    let rss = || common::rss_kib(std::process::id()).unwrap_or_default().0 >> 10;
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(cache)
        .open()?;
    let tree = db.open_tree("objects")?;
    let before = rss();
    let value = vec![b'x'; 4000];
    for i in 0..objects {
        tree.insert(format!("widgets\0bench\0uid-{i:08}"), value.as_slice())?;
        if i % 1000 == 999 {
            db.flush()?;
        }
    }
    db.flush()?;
    let after = rss();
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!(
        "sled alone: {objects} values of 4000 B, cache {} MiB: RSS {before} MiB empty, {after} MiB after the inserts, {} MiB 2 s later",
        cache >> 20,
        rss()
    );
    Ok(())
}
