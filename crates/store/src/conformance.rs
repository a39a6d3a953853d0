//! One suite, every backend: the same functions run over redb (a file in a temp dir) and over
//! a real etcd (`etcd_server`: Debian's etcd-server on a loopback port in a temp dir, one per
//! test, stopped after it; a machine without etcd fails these tests with how to install it).
//! Revisions are only compared, never counted: etcd's are the cluster's (see lib.rs).

use std::sync::Arc;
use std::time::Duration;

use crate::{Compare, Event, KeyValue, Op, Store, Txn};

type S = Arc<dyn Store>;

/// The next event, or a failure naming what was awaited (a hang would be worse).
fn next(w: &mut crate::Watch, what: &str) -> Event {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), w.next()).await })
        .unwrap_or_else(|_| panic!("no event for {what} within 30 s"))
        .unwrap_or_else(|| panic!("watch ended before {what}"))
}

fn put_rev(s: &S, k: &str, v: &[u8]) -> u64 {
    s.put(k, v.to_vec()).unwrap()
}

fn value(s: &S, k: &str) -> Option<Vec<u8>> {
    s.get(k).unwrap().map(|kv| kv.value)
}

/// What a watcher would report, without revisions: (kind, key, value).
fn shape(e: &Event) -> (&'static str, String, Vec<u8>) {
    match e {
        Event::Put(kv) => ("put", kv.key.clone(), kv.value.clone()),
        Event::Delete { key, .. } => ("delete", key.clone(), vec![]),
    }
}

pub fn get_put_delete(s: &S) {
    assert_eq!(s.get("/a").unwrap(), None);
    let r1 = put_rev(s, "/a", b"1");
    assert_eq!(
        s.get("/a").unwrap(),
        Some(KeyValue {
            key: "/a".into(),
            value: b"1".to_vec(),
            create_revision: r1,
            mod_revision: r1
        })
    );
    assert_eq!(s.revision().unwrap(), r1);
    let r2 = put_rev(s, "/a", b"2");
    assert!(r2 > r1);
    let kv = s.get("/a").unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.create_revision, kv.mod_revision),
        (&b"2"[..], r1, r2)
    );
    // An empty value is a value.
    put_rev(s, "/empty", b"");
    assert_eq!(value(s, "/empty"), Some(vec![]));
    let r3 = s.delete("/a").unwrap();
    assert!(r3 > r2);
    assert_eq!(s.get("/a").unwrap(), None);
    // Deleting what is not there changes nothing, the revision included.
    let before = s.revision().unwrap();
    assert_eq!(s.delete("/a").unwrap(), before);
    assert_eq!(s.delete("/never").unwrap(), before);
    assert_eq!(s.revision().unwrap(), before);
    // Created again: a new life, a new create revision.
    let r4 = put_rev(s, "/a", b"3");
    assert_eq!(s.get("/a").unwrap().unwrap().create_revision, r4);
}

pub fn range_is_by_prefix_in_key_order(s: &S) {
    for k in ["/r/b", "/r/a/2", "/r/c", "/r/a/1", "/rx", "/q/a", "/r"] {
        put_rev(s, k, k.as_bytes());
    }
    let keys =
        |p: &str| -> Vec<String> { s.range(p).unwrap().into_iter().map(|kv| kv.key).collect() };
    assert_eq!(keys("/r/"), ["/r/a/1", "/r/a/2", "/r/b", "/r/c"]);
    assert_eq!(keys("/r/a/"), ["/r/a/1", "/r/a/2"]);
    assert_eq!(
        keys("/r"),
        ["/r", "/r/a/1", "/r/a/2", "/r/b", "/r/c", "/rx"]
    );
    assert!(keys("/nothing/").is_empty());
    assert_eq!(keys("").len(), 7);
    let kv = &s.range("/r/c").unwrap()[0];
    assert_eq!(kv.value, b"/r/c");
    s.txn(Txn::new().then(Op::DeletePrefix("/r/a/".into())))
        .unwrap();
    assert_eq!(keys("/r/"), ["/r/b", "/r/c"]);
}

pub fn txn_compare_and_swap(s: &S) {
    let create = |v: &[u8]| {
        s.txn(
            Txn::new()
                .when(Compare::Absent("/n".into()))
                .then(Op::Put("/n".into(), v.to_vec())),
        )
        .unwrap()
    };
    let first = create(b"first");
    assert!(first.succeeded);
    let second = create(b"second");
    assert!(!second.succeeded);
    // A failed compare without `otherwise` writes nothing: same revision.
    assert_eq!(second.revision, first.revision);
    assert_eq!(value(s, "/n").unwrap(), b"first");

    let rev = s.get("/n").unwrap().unwrap().mod_revision;
    let cas = |c: Compare| {
        s.txn(
            Txn::new()
                .when(c)
                .then(Op::Put("/n".into(), b"cas".to_vec())),
        )
        .unwrap()
        .succeeded
    };
    assert!(!cas(Compare::ModRevision("/n".into(), rev + 1000)));
    assert!(!cas(Compare::ModRevision("/n".into(), rev - 1)));
    assert!(!cas(Compare::Value("/n".into(), b"firs".to_vec())));
    assert!(!cas(Compare::Value("/missing".into(), vec![])));
    assert!(!cas(Compare::ModRevision("/missing".into(), 0)));
    assert_eq!(value(s, "/n").unwrap(), b"first");
    assert!(cas(Compare::Value("/n".into(), b"first".to_vec())));
    assert!(
        !cas(Compare::ModRevision("/n".into(), rev)),
        "the value moved on"
    );
    let rev = s.get("/n").unwrap().unwrap().mod_revision;
    assert!(cas(Compare::ModRevision("/n".into(), rev)));

    // Every compare must hold; `otherwise` runs when one does not.
    put_rev(s, "/m", b"m");
    let r = s
        .txn(
            Txn::new()
                .when(Compare::Value("/m".into(), b"m".to_vec()))
                .when(Compare::Absent("/n".into()))
                .then(Op::Put("/then".into(), vec![1]))
                .otherwise(Op::Put("/otherwise".into(), vec![2]))
                .otherwise(Op::Delete("/m".into())),
        )
        .unwrap();
    assert!(!r.succeeded);
    assert_eq!(s.revision().unwrap(), r.revision);
    assert_eq!(value(s, "/then"), None);
    assert_eq!(value(s, "/otherwise"), Some(vec![2]));
    assert_eq!(value(s, "/m"), None);
    let otherwise = s.get("/otherwise").unwrap().unwrap();
    assert_eq!(
        otherwise.mod_revision, r.revision,
        "one revision for the whole transaction"
    );
}

/// Several writes to one key in one transaction: the ops apply in order (etcd itself refuses
/// such a transaction; its backend sends the net effect).
pub fn txn_ops_apply_in_order(s: &S) {
    put_rev(s, "/o/gone", b"x");
    let r = s
        .txn(
            Txn::new()
                .then(Op::Put("/o/k".into(), b"1".to_vec()))
                .then(Op::Put("/o/k".into(), b"2".to_vec()))
                .then(Op::Put("/o/gone".into(), b"y".to_vec()))
                .then(Op::Delete("/o/gone".into()))
                .then(Op::Delete("/o/back".into()))
                .then(Op::Put("/o/back".into(), b"b".to_vec())),
        )
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(value(s, "/o/k").unwrap(), b"2");
    assert_eq!(value(s, "/o/gone"), None);
    assert_eq!(value(s, "/o/back").unwrap(), b"b");
    assert_eq!(s.get("/o/k").unwrap().unwrap().mod_revision, r.revision);
}

/// The quota pattern (node/src/quota.rs) from several threads at once: read the count, write
/// count + 1 if it has not moved. Exactly the quota's worth of claims succeed.
pub fn racing_quota_counter(s: &S) {
    const QUOTA: u64 = 25;
    const THREADS: usize = 4;
    let key = "/counts/t/containers";
    let claimed: Vec<u64> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let (mut mine, mut conflicts) = (0u64, 0u64);
                    loop {
                        let current = s.get(key).unwrap();
                        let n: u64 = current.as_ref().map_or(0, |kv| {
                            std::str::from_utf8(&kv.value).unwrap().parse().unwrap()
                        });
                        if n >= QUOTA {
                            return (mine, conflicts);
                        }
                        let guard = match &current {
                            Some(kv) => Compare::ModRevision(key.into(), kv.mod_revision),
                            None => Compare::Absent(key.into()),
                        };
                        let txn = Txn::new()
                            .when(guard)
                            .then(Op::Put(key.into(), (n + 1).to_string().into_bytes()));
                        if s.txn(txn).unwrap().succeeded {
                            mine += 1;
                        } else {
                            conflicts += 1;
                        }
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap().0).collect()
    });
    assert_eq!(
        claimed.iter().sum::<u64>(),
        QUOTA,
        "claims per thread: {claimed:?}"
    );
    assert_eq!(value(s, key).unwrap(), QUOTA.to_string().as_bytes());
}

/// Revisions from concurrent writers: all distinct, increasing for each writer, and the
/// store's revision is at least the last one handed out.
pub fn revisions_are_monotone(s: &S) {
    let per_thread: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..3)
            .map(|t| {
                scope.spawn(move || {
                    (0..20)
                        .map(|i| put_rev(s, &format!("/mono/{t}/{}", i % 4), &[i as u8]))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for revs in &per_thread {
        assert!(revs.windows(2).all(|w| w[0] < w[1]), "{revs:?}");
    }
    let mut all: Vec<u64> = per_thread.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 60, "every write its own revision");
    assert!(s.revision().unwrap() >= *all.last().unwrap());
    for kv in s.range("/mono/").unwrap() {
        assert!(kv.create_revision <= kv.mod_revision);
    }
}

/// A watch from a revision: the changes made before it was opened come first, then live ones,
/// all under the prefix, in revision order, a transaction's in its ops' order.
pub fn watch_from_a_revision_replays_then_follows(s: &S) {
    put_rev(s, "/w/before", b"0");
    let start = s.revision().unwrap() + 1;
    let r1 = put_rev(s, "/w/a", b"1");
    put_rev(s, "/elsewhere", b"x");
    let r2 = s
        .txn(
            Txn::new()
                .then(Op::Put("/w/b".into(), b"2".to_vec()))
                .then(Op::Put("/w/a".into(), b"1b".to_vec())),
        )
        .unwrap()
        .revision;
    let r3 = s.delete("/w/before").unwrap();
    let mut w = s.watch_from("/w/", start).unwrap();
    let r4 = s
        .txn(Txn::new().then(Op::DeletePrefix("/w/".into())))
        .unwrap()
        .revision;
    let r5 = put_rev(s, "/w/end", b"5");
    let expected = [
        (("put", "/w/a", &b"1"[..]), r1),
        (("put", "/w/b", b"2"), r2),
        (("put", "/w/a", b"1b"), r2),
        (("delete", "/w/before", b""), r3),
        (("delete", "/w/a", b""), r4),
        (("delete", "/w/b", b""), r4),
        (("put", "/w/end", b"5"), r5),
    ];
    for (i, ((kind, key, val), rev)) in expected.into_iter().enumerate() {
        let e = next(&mut w, &format!("event {i} ({kind} {key})"));
        assert_eq!(
            shape(&e),
            (kind, key.to_string(), val.to_vec()),
            "event {i}"
        );
        assert_eq!(e.revision(), rev, "event {i}");
    }
}

/// A plain watch sees what is written after it is opened, nothing from before.
pub fn watch_follows_from_now(s: &S) {
    put_rev(s, "/f/old", b"old");
    let mut w = s.watch("/f/");
    put_rev(s, "/g/other", b"x");
    let r = put_rev(s, "/f/new", b"new");
    let e = next(&mut w, "the put after the watch");
    assert_eq!(shape(&e), ("put", "/f/new".into(), b"new".to_vec()));
    assert_eq!(e.revision(), r);
}

/// Writers on several threads, one watcher: it sees every change, in revision order.
pub fn watch_order_under_concurrent_writers(s: &S) {
    let start = s.revision().unwrap() + 1;
    let mut w = s.watch_from("/c/", start).unwrap();
    std::thread::scope(|scope| {
        for t in 0..3 {
            scope.spawn(move || {
                for i in 0..15 {
                    put_rev(s, &format!("/c/{t}"), &[i]);
                }
            });
        }
    });
    let mut last = 0;
    let mut seen = [0u8; 3];
    for i in 0..45 {
        let e = next(&mut w, &format!("event {i} of 45"));
        assert!(
            e.revision() > last,
            "revision order: {} after {last}",
            e.revision()
        );
        last = e.revision();
        let Event::Put(kv) = e else { panic!("a put") };
        let t: usize = kv.key["/c/".len()..].parse().unwrap();
        assert_eq!(kv.value, [seen[t]], "writer {t}'s puts in order");
        seen[t] += 1;
    }
}

/// hyperd calls the store from its tokio workers: calls work there, and on a current-thread
/// runtime's thread, without panicking or starving the runtime.
pub fn calls_from_inside_async_runtimes(s: &S) {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s2 = s.clone();
    let on_worker = multi
        .block_on(async move {
            tokio::spawn(async move {
                let r = s2.put("/async/worker", b"w".to_vec()).unwrap();
                (r, s2.get("/async/worker").unwrap().unwrap().mod_revision)
            })
            .await
        })
        .unwrap();
    assert_eq!(on_worker.0, on_worker.1);
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = current.block_on(async { s.put("/async/current", b"c".to_vec()).unwrap() });
    assert_eq!(s.get("/async/current").unwrap().unwrap().mod_revision, got);
}

/// Polls `cond` every 100 ms for up to 30 s (leases end on the backend's clock).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: not within 30 s");
}

/// A leased key lives while its lease is renewed, and goes (a delete event) once it is not;
/// a put under the ended lease is refused and writes nothing.
pub fn lease_keys_go_when_it_is_not_renewed(s: &S) {
    let lease = s.lease_grant(Duration::from_secs(3)).unwrap();
    let mut w = s.watch("/l/");
    s.txn(Txn::new().then(Op::PutLeased("/l/a".into(), b"1".to_vec(), lease)))
        .unwrap();
    put_rev(s, "/l/plain", b"p");
    // Renewed well within its time to live, for longer than it: still there.
    for _ in 0..15 {
        std::thread::sleep(Duration::from_millis(300));
        assert!(s.lease_keep_alive(lease).unwrap());
    }
    assert_eq!(value(s, "/l/a"), Some(b"1".to_vec()));
    eventually("the unrenewed lease's key to go", || {
        value(s, "/l/a").is_none()
    });
    assert!(!s.lease_keep_alive(lease).unwrap());
    assert_eq!(value(s, "/l/plain"), Some(b"p".to_vec()));
    let seen: Vec<_> = (0..3)
        .map(|i| shape(&next(&mut w, &format!("event {i}"))))
        .collect();
    assert_eq!(
        seen,
        [
            ("put", "/l/a".into(), b"1".to_vec()),
            ("put", "/l/plain".into(), b"p".to_vec()),
            ("delete", "/l/a".into(), vec![]),
        ]
    );
    let late = Txn::new().then(Op::PutLeased("/l/b".into(), b"2".to_vec(), lease));
    assert!(s.txn(late).is_err());
    assert_eq!(value(s, "/l/b"), None);
}

/// Revoking deletes the lease's keys at once (not one put since without it), and revoking
/// again, or renewing, finds it gone.
pub fn lease_revoke_deletes_its_keys(s: &S) {
    let lease = s.lease_grant(Duration::from_secs(60)).unwrap();
    let other = s.lease_grant(Duration::from_secs(60)).unwrap();
    s.txn(
        Txn::new()
            .then(Op::PutLeased("/v/a".into(), b"1".to_vec(), lease))
            .then(Op::PutLeased("/v/b".into(), b"1".to_vec(), lease))
            .then(Op::PutLeased("/v/c".into(), b"1".to_vec(), other)),
    )
    .unwrap();
    // Put again without the lease: no longer the lease's.
    put_rev(s, "/v/b", b"2");
    s.lease_revoke(lease).unwrap();
    let left: Vec<String> = s
        .range("/v/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(left, ["/v/b", "/v/c"]);
    s.lease_revoke(lease).unwrap();
    assert!(!s.lease_keep_alive(lease).unwrap());
    assert!(s.lease_keep_alive(other).unwrap());
}

/// Generates one `#[test]` per suite function, for one backend's fixture.
macro_rules! suite {
    ($fixture:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (_guard, store) = $fixture();
                super::$name(&store);
            }
        )*
    };
}

macro_rules! all_tests {
    ($fixture:ident) => {
        suite!($fixture: get_put_delete, range_is_by_prefix_in_key_order, txn_compare_and_swap,
            txn_ops_apply_in_order, racing_quota_counter, revisions_are_monotone,
            watch_from_a_revision_replays_then_follows, watch_follows_from_now,
            watch_order_under_concurrent_writers, calls_from_inside_async_runtimes,
            lease_keys_go_when_it_is_not_renewed, lease_revoke_deletes_its_keys);
    };
}

mod redb {
    use super::*;

    fn store() -> (tempfile::TempDir, S) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::RedbStore::open(&dir.path().join("db")).unwrap();
        (dir, Arc::new(store))
    }

    all_tests!(store);

    /// Leases end with the process that held them: the next open deletes their keys.
    #[test]
    fn an_earlier_process_leased_keys_are_gone_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let s = crate::RedbStore::open(&path).unwrap();
            let lease = s.lease_grant(Duration::from_secs(60)).unwrap();
            s.txn(Txn::new().then(Op::PutLeased("/n/a".into(), b"1".to_vec(), lease)))
                .unwrap();
            s.put("/n/b", b"1".to_vec()).unwrap();
        }
        // The sweeper thread lets go of the file within a sweep.
        std::thread::sleep(Duration::from_millis(500));
        let s = crate::RedbStore::open(&path).unwrap();
        let left: Vec<String> = s
            .range("/n/")
            .unwrap()
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(left, ["/n/b"]);
    }
}

#[cfg(feature = "etcd")]
mod etcd {
    use super::*;
    use crate::etcd_server::EtcdServer;

    /// A fresh etcd, and a store in a namespace of its own (as a shared etcd would be).
    fn store() -> (EtcdServer, S) {
        let server = EtcdServer::start();
        // Something outside the namespace, which the store must never see.
        let outside =
            crate::EtcdStore::open(&format!("etcd://{}/hyper2", server.endpoint())).unwrap();
        outside.put("/r/a/1", b"other".to_vec()).unwrap();
        outside.put("/w/a", b"other".to_vec()).unwrap();
        let store = crate::EtcdStore::open(&format!("etcd://{}/hyper", server.endpoint())).unwrap();
        (server, Arc::new(store))
    }

    all_tests!(store);

    /// etcd lost and back: calls in between fail naming etcd (no hang), the same store works
    /// again afterwards, and a watch picks up where it was, losing nothing.
    #[test]
    fn outage_is_an_error_and_watches_resume() {
        let (mut server, s) = store();
        let start = s.revision().unwrap() + 1;
        let mut w = s.watch("/x/");
        let mut from = s.watch_from("/x/", start).unwrap();
        let r1 = put_rev(&s, "/x/1", b"1");
        assert_eq!(next(&mut w, "the first put").revision(), r1);
        server.kill();
        let e = s.put("/x/2", b"2".to_vec()).unwrap_err().to_string();
        assert!(e.contains("etcd at 127.0.0.1:"), "{e}");
        server.restart();
        let mut r2 = None;
        for _ in 0..100 {
            match s.put("/x/2", b"2".to_vec()) {
                Ok(r) => {
                    r2 = Some(r);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let r2 = r2.expect("the store works again once etcd is back");
        let e = next(&mut w, "the put after the outage");
        assert_eq!((e.key(), e.revision()), ("/x/2", r2));
        for (key, rev) in [("/x/1", r1), ("/x/2", r2)] {
            let e = next(&mut from, key);
            assert_eq!((e.key(), e.revision()), (key, rev));
        }
    }

    /// A watch from a revision etcd has compacted away starts at the oldest one it kept (as
    /// a redb watch from before its log does), logging what was skipped.
    #[test]
    fn watch_from_a_compacted_revision_skips_to_what_is_left() {
        let (server, s) = store();
        let r1 = put_rev(&s, "/k/1", b"1");
        put_rev(&s, "/k/2", b"2");
        let r3 = put_rev(&s, "/k/3", b"3");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("http://{}", server.endpoint());
            let mut c = etcd_client::Client::connect([url], None).await.unwrap();
            c.compact(r3 as i64, None).await.unwrap();
        });
        let mut w = s.watch_from("/k/", r1).unwrap();
        let e = next(&mut w, "the oldest change kept");
        assert_eq!((e.key(), e.revision()), ("/k/3", r3));
        let r4 = put_rev(&s, "/k/4", b"4");
        assert_eq!(next(&mut w, "a live change").revision(), r4);
    }

    /// A store URL names where and under what: a bad one is refused before any connection.
    #[test]
    fn urls() {
        use crate::etcd_store::parse_url;
        assert_eq!(
            parse_url("etcd://a:1,b:2/ns/").unwrap(),
            (
                vec!["a:1".to_string(), "b:2".to_string()],
                "/ns".to_string()
            )
        );
        assert_eq!(parse_url("etcd://a:1").unwrap().1, "/hyper");
        for bad in ["etcd://", "etcd://a", "http://a:1", "etcd://a:1/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        // Nothing listens on port 1: opening fails at once, saying where.
        let e = crate::EtcdStore::open("etcd://127.0.0.1:1").err().unwrap();
        assert!(e.to_string().contains("etcd://127.0.0.1:1/hyper"), "{e}");
        // The same from async code (hyperd opens its store there): an error, not a panic.
        let rt = tokio::runtime::Runtime::new().unwrap();
        let e = rt.block_on(async { crate::EtcdStore::open("etcd://127.0.0.1:1").err() });
        assert!(e.is_some());
    }
}
