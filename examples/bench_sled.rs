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
//!
//! `bench_sled trickle [rate] [events]` measures instead what one durable point costs at a
//! trickle (default 250 events/s, 2,500 events, one commit each), the floor under
//! crbridge's CPU per event when every event is its own batch (BENCHMARKS.md §1). Each
//! variant runs `events` commits paced by a tokio interval on a multi-thread runtime, as
//! crbridge's capture does, and prints this process's CPU per commit:
//! - `timer`: the pacing alone (subtracted from the others);
//! - `sled transaction + flush`: a ~2 KB state and a ~2.2 KB outbox entry in one transaction
//!   over two trees, then `flush_async`: crbridge's durable point, reduced to two trees;
//! - `sled insert + flush`: one outbox insert, then `flush_async`: sled's least durable write;
//! - `sled transaction, no flush`: the transaction alone (sled seals and writes its log
//!   buffer for every transaction);
//! - `file write + fdatasync`: 2.2 KB written at the end of a plain file, then
//!   `fdatasync`: what durability costs the kernel and the disk, without sled.

#[path = "../benches/common/mod.rs"]
mod common;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("trickle") {
        return trickle();
    }
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

/// One durable write per event at a trickle: the variants of the module documentation.
fn trickle() -> anyhow::Result<()> {
    let arg = |i: usize, default: u64| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (rate, events) = (arg(2, 250).max(1), arg(3, 2500).max(1));
    let dir = tempfile::tempdir()?;
    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .cache_capacity(64 << 20)
        .flush_every_ms(Some(200))
        .open()?;
    let (states, outbox) = (db.open_tree("objects")?, db.open_tree("outbox")?);
    let mut file = std::fs::File::create(dir.path().join("log"))?;
    let (state, entry) = (vec![b's'; 2000], vec![b'e'; 2200]);
    let pid = std::process::id().to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut seq = 0u64;
    let mut run = |step: &mut dyn FnMut(u64) -> anyhow::Result<bool>| {
        rt.block_on(async {
            let mut tick =
                tokio::time::interval(std::time::Duration::from_micros(1_000_000 / rate));
            let cpu = common::cpu_seconds(&pid);
            for _ in 0..events {
                tick.tick().await;
                seq += 1;
                if step(seq)? {
                    db.flush_async().await?;
                }
            }
            Ok::<_, anyhow::Error>((common::cpu_seconds(&pid) - cpu) / events as f64 * 1e6)
        })
    };
    use sled::Transactional;
    use std::io::Write;
    let timer = run(&mut |_| Ok(false))?;
    let transaction = |seq: u64| -> anyhow::Result<()> {
        (&states, &outbox)
            .transaction(|(s, o)| {
                s.insert(
                    format!("widgets\0bench\0uid-{:08}", seq % 200).as_bytes(),
                    state.as_slice(),
                )?;
                o.insert(&seq.to_be_bytes(), entry.as_slice())?;
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| anyhow::anyhow!("transaction: {e:?}"))
    };
    let tx_flush = run(&mut |seq| transaction(seq).map(|()| true))?;
    let insert_flush = run(&mut |seq| {
        outbox.insert(seq.to_be_bytes(), entry.as_slice())?;
        Ok(true)
    })?;
    let tx_only = run(&mut |seq| transaction(seq).map(|()| false))?;
    let fsync = run(&mut |_| {
        file.write_all(&entry)?;
        file.sync_data()?;
        Ok(false)
    })?;
    println!("sled trickle: {events} commits at {rate}/s, CPU per commit (the pacing timer's {timer:.0} µs subtracted):");
    for (name, us) in [
        ("sled transaction (state + outbox entry) + flush", tx_flush),
        ("sled insert (outbox entry) + flush", insert_flush),
        ("sled transaction, no flush", tx_only),
        ("file write + fdatasync", fsync),
    ] {
        println!("  {name:<50} {:>5.0} µs", us - timer);
    }
    Ok(())
}
