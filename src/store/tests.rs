use super::*;
use proptest::prelude::*;
use serde_json::json;

fn entry(n: u64, written_ms: u64) -> OutboxEntry {
    test_entry(&format!("id-{n}"), "widgets", "u", written_ms)
}

fn put(uid: &str, rv: &str, ev: Option<OutboxEntry>) -> Write {
    Write::Put {
        key: object_key("widgets", "ns", uid),
        resource_version: rv.into(),
        object_json: serde_json::value::to_raw_value(&json!({"metadata": {"uid": uid}})).unwrap(),
        event: ev,
    }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, &StoreOptions::default()).unwrap()
}

/// Runs `open` once sled has let go of the directory lock of a handle dropped just before:
/// it releases the lock from a background thread, so an immediate reopen can find it held.
fn when_unlocked<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    for _ in 0..40 {
        match open() {
            Ok(v) => return v,
            Err(e) if format!("{e:?}").contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("the state directory stayed locked for 2 s")
}

#[test]
fn one_transaction_writes_state_outbox_and_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ck = checkpoint_key("widgets", None);
    let batch = Batch {
        writes: vec![put("a", "5", Some(entry(1, 0))), put("b", "6", None)],
        checkpoints: vec![(ck.clone(), "6".into())],
    };
    assert_eq!(store.commit(&batch).unwrap(), Some(1));
    assert_eq!(store.checkpoint(&ck).unwrap().as_deref(), Some("6"));
    assert_eq!(
        store
            .object(&object_key("widgets", "ns", "b"))
            .unwrap()
            .unwrap()
            .resource_version,
        "6"
    );
    let remove = Batch {
        writes: vec![Write::Remove {
            key: object_key("widgets", "ns", "a"),
            event: Some(entry(2, 0)),
        }],
        checkpoints: vec![],
    };
    assert_eq!(store.commit(&remove).unwrap(), Some(2));
    let left: Vec<_> = store
        .objects_after(&object_prefix("widgets", None), None)
        .map(|r| r.unwrap().0.uid().to_string())
        .collect();
    assert_eq!(left, vec!["b"]);
    let ids: Vec<_> = store
        .outbox_range(1, 10)
        .map(|r| r.unwrap().1.event.id)
        .collect();
    assert_eq!(ids, vec!["id-1", "id-2"]);
}

#[test]
fn versions_mirror_the_stored_states() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let prefix = object_prefix("widgets", None);
    let (a, b) = (
        object_key("widgets", "ns", "a"),
        object_key("widgets", "ns", "b"),
    );
    store
        .commit(&Batch {
            writes: vec![
                put("a", "5", None),
                put("b", "6", None),
                put("a", "7", None),
            ],
            checkpoints: vec![],
        })
        .unwrap();
    assert_eq!(store.version(&a).unwrap().as_deref(), Some("7"));
    assert_eq!(store.version(&b).unwrap().as_deref(), Some("6"));
    store
        .commit(&Batch {
            writes: vec![Write::Remove {
                key: b.clone(),
                event: None,
            }],
            checkpoints: vec![],
        })
        .unwrap();
    assert_eq!(store.version(&b).unwrap(), None);
    let keys: Vec<_> = store
        .object_keys_with_prefix(&prefix)
        .map(|k| k.unwrap().uid().to_string())
        .collect();
    assert_eq!(keys, vec!["a"]);
    assert_eq!(store.count_objects(&prefix), 1);
}

#[test]
fn versions_are_built_for_a_directory_written_without_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store
            .commit(&Batch {
                writes: vec![put("a", "5", None), put("b", "6", None)],
                checkpoints: vec![],
            })
            .unwrap();
        store.t().unwrap().db.flush().unwrap();
    }
    {
        // What an earlier release left: states, no versions, no marker.
        let db = when_unlocked(|| sled::Config::new().path(dir.path()).open());
        db.open_tree("versions").unwrap().clear().unwrap();
        db.open_tree("meta")
            .unwrap()
            .remove(VERSIONS_BUILT)
            .unwrap();
        db.flush().unwrap();
    }
    let store = when_unlocked(|| Store::open(dir.path(), &StoreOptions::default()));
    assert_eq!(
        store
            .version(&object_key("widgets", "ns", "b"))
            .unwrap()
            .as_deref(),
        Some("6")
    );
    assert_eq!(store.count_objects(&object_prefix("widgets", None)), 2);
}

#[test]
fn unopenable_directory_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let bad = dir.path().join("missing").join("\0bad");
    let err = match Store::open(&bad, &StoreOptions::default()) {
        Ok(_) => panic!("opening an invalid path must fail"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("state directory"), "{err}");
}

#[test]
fn gc_keeps_what_the_slowest_cursor_and_retention_need() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for n in 1..=10 {
        store
            .commit(&Batch {
                writes: vec![Write::Emit(entry(n, n * 100))],
                checkpoints: vec![],
            })
            .unwrap();
    }
    // Cursor at 6, retention cutoff at 450 ms: 1..=4 are old and acked, 5..6 are young.
    assert_eq!(store.gc_outbox(6, 450, u64::MAX).unwrap(), 4);
    assert_eq!(store.first_seq().unwrap(), Some(5));
    // Over the byte budget, acked entries go regardless of age, unacked never.
    assert_eq!(store.gc_outbox(6, 0, 0).unwrap(), 2);
    assert_eq!(store.first_seq().unwrap(), Some(7));
    assert_eq!(store.last_seq().unwrap(), 10);
}

#[derive(Debug, Clone)]
enum Op {
    Commit(u8),
    Ack(usize, u8),
    Gc,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..5).prop_map(Op::Commit),
        3 => (0usize..2, 0u8..6).prop_map(|(s, n)| Op::Ack(s, n)),
        1 => Just(Op::Gc),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Against a simple model: sequence numbers are dense and never reused, across clean
    /// reopens too; every entry above the slowest cursor stays readable; cursors persist.
    #[test]
    fn outbox_and_cursors_follow_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let sinks = ["nats", "kafka"];
        let mut last = 0u64;
        let mut cursors = [0u64; 2];
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for op in ops {
            match op {
                Op::Commit(n) => {
                    let writes = (0..n).map(|_| Write::Emit(entry(0, 0))).collect();
                    let got = store.commit(&Batch { writes, checkpoints: vec![] }).unwrap();
                    last += n as u64;
                    prop_assert_eq!(got, Some(last));
                }
                Op::Ack(s, n) => {
                    cursors[s] = (cursors[s] + n as u64).min(last);
                    store.set_cursor(sinks[s], cursors[s]).unwrap();
                }
                Op::Gc => {
                    let min = *cursors.iter().min().unwrap();
                    store.gc_outbox(min, u64::MAX, u64::MAX).unwrap();
                }
                Op::Reopen => {
                    rt.block_on(store.flush()).unwrap();
                    // sled lets go of the directory's lock from a background thread after
                    // the last handle drops; `reopen` waits for it (a plain `open` right
                    // after a drop failed now and then with "could not acquire lock").
                    store.reopen().unwrap();
                }
            }
            let min = *cursors.iter().min().unwrap();
            let seqs: Vec<u64> = store.outbox_range(min + 1, u64::MAX).map(|r| r.unwrap().0).collect();
            prop_assert_eq!(seqs, ((min + 1)..=last).collect::<Vec<_>>());
            prop_assert_eq!(store.last_seq().unwrap(), last);
            for (i, s) in sinks.iter().enumerate() {
                prop_assert_eq!(store.cursor(s).unwrap(), cursors[i]);
            }
        }
    }
}

/// The disk guard in capture reads this; `None` would switch the guard off.
#[test]
fn space_available_reports_free_bytes_of_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let free = store
        .space_available()
        .expect("free space of a temp directory");
    assert!(free > 0, "a writable temp directory has free space: {free}");
}
