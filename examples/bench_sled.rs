//! What sled 0.34 alone costs in memory, without crbridge: `objects` values of 4,000 bytes
//! inserted into one tree (keys shaped like crbridge's object keys), flushed every 1,000,
//! with the page cache set to `cache-bytes`; prints the process RSS after the inserts and
//! after two idle seconds. The lower bound of what crbridge's object states cost in memory.
//!
//! With `outbox` as a third argument, also appends one 5,000-byte value per object under a
//! big-endian sequence number in a second tree, as crbridge's outbox does.
//!
//! With `read` as a fourth argument, reads every state back afterwards (as a relist's
//! comparison does) and reports the RSS after that too.
//!
//! `cargo run --release --example bench_sled -- [objects] [cache-bytes] [outbox] [read]`

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
    let outbox = (std::env::args().nth(3).as_deref() == Some("outbox"))
        .then(|| db.open_tree("outbox"))
        .transpose()?;
    let entry = vec![b'y'; 5000];
    let before = rss();
    let value = vec![b'x'; 4000];
    for i in 0..objects {
        tree.insert(format!("widgets\0bench\0uid-{i:08}"), value.as_slice())?;
        if let Some(outbox) = &outbox {
            outbox.insert((i + 1).to_be_bytes(), entry.as_slice())?;
        }
        if i % 1000 == 999 {
            db.flush()?;
        }
    }
    db.flush()?;
    let after = rss();
    if std::env::args().nth(4).as_deref() == Some("read") {
        for i in 0..objects {
            tree.get(format!("widgets\0bench\0uid-{i:08}"))?;
        }
        println!("after reading every state back: RSS {} MiB", rss());
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    println!(
        "sled alone: {objects} values of 4000 B{}, cache {} MiB: RSS {before} MiB empty, {after} MiB after the inserts, {} MiB 2 s later",
        if outbox.is_some() { " + as many outbox entries of 5000 B" } else { "" },
        cache >> 20,
        rss()
    );
    Ok(())
}
