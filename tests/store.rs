//! The store's conformance suite: the same cases against both backends,
//! SQLite in a temporary directory and a real PostgreSQL started by the
//! test (`harness/postgres.rs`), each test with a database of its own.
//! Then what each backend does when its engine fails.

#[path = "harness/postgres.rs"]
mod pg;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use wasmtp::store::{
    BackendSettings, MAX_KEY_BYTES, MAX_VALUE_BYTES, NewMessage, State, Store, StoreError,
    StoreSettings,
};

const NS: &str = "conformance";

fn settings(backend: BackendSettings) -> StoreSettings {
    StoreSettings {
        backend,
        ttl_cap: Duration::from_secs(3600),
        queue_attempts: 3,
        queue_backoff: Duration::from_millis(200),
        group_commit: true,
        sweep_interval: Duration::from_secs(3600),
    }
}

/// A temporary state directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wasmtp-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn message(id: &str) -> NewMessage {
    NewMessage {
        id: id.to_owned(),
        mail_from: "anne@example.com".into(),
        rcpt_to: vec!["bob@example.net".into(), "carol@example.net".into()],
        facts: r#"{"client":"192.0.2.1"}"#.into(),
        message: format!("Subject: {id}\r\n\r\nHello\r\n").into_bytes(),
    }
}

/// Each case, run once per backend: `conformance!(name, |store| async { ... })`
/// makes `sqlite::name` and `postgres::name`.
macro_rules! conformance {
    ($($name:ident => $body:expr;)*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = TempDir::new();
                    let store = Store::open(&settings(BackendSettings::Sqlite { dir: dir.0.clone() })).unwrap();
                    ($body)(store).await;
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let url = super::pg::Postgres::shared().database();
                    let store = Store::open(&settings(BackendSettings::Postgres { url, pool_size: 8 })).unwrap();
                    ($body)(store).await;
                }
            )*
        }
    };
}

conformance! {
    kv_set_get_and_revisions => |s: Store| async move {
        let kv = &s.kv;
        assert_eq!(kv.get(NS, "k").await, Ok(None));
        let r1 = kv.set(NS, "k", b"one", Duration::from_secs(60)).await.unwrap();
        let e = kv.get(NS, "k").await.unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.revision), (&b"one"[..], r1));
        assert!(e.expires_in <= Duration::from_secs(60) && e.expires_in > Duration::from_secs(55));
        let r2 = kv.set(NS, "k", b"two", Duration::from_secs(60)).await.unwrap();
        assert!(r2 > r1);
        assert_eq!(kv.get(NS, "k").await.unwrap().unwrap().value, b"two");
        // Namespaces are apart.
        assert_eq!(kv.get("other", "k").await, Ok(None));
        assert_eq!(kv.delete(NS, "k").await, Ok(true));
        assert_eq!(kv.delete(NS, "k").await, Ok(false));
        assert_eq!(kv.get(NS, "k").await, Ok(None));
    };

    kv_compare_and_set => |s: Store| async move {
        let kv = &s.kv;
        let ttl = Duration::from_secs(60);
        let r1 = kv.cas(NS, "k", b"first", None, ttl).await.unwrap();
        assert!(matches!(kv.cas(NS, "k", b"again", None, ttl).await, Err(StoreError::Conflict(_))));
        assert!(matches!(kv.cas(NS, "k", b"x", Some(r1 + 1000), ttl).await, Err(StoreError::Conflict(_))));
        let r2 = kv.cas(NS, "k", b"second", Some(r1), ttl).await.unwrap();
        assert!(r2 > r1);
        assert!(matches!(kv.cas(NS, "k", b"stale", Some(r1), ttl).await, Err(StoreError::Conflict(_))));
        assert_eq!(kv.get(NS, "k").await.unwrap().unwrap().value, b"second");
        // Deleted and set again: a revision never seen before, so an old
        // compare-and-set can't succeed by accident.
        kv.delete(NS, "k").await.unwrap();
        let r3 = kv.cas(NS, "k", b"third", None, ttl).await.unwrap();
        assert!(r3 > r2);
    };

    kv_concurrent_cas_has_one_winner => |s: Store| async move {
        let mut tasks = Vec::new();
        for i in 0..20 {
            let kv = s.kv.clone();
            tasks.push(tokio::spawn(async move {
                kv.cas(NS, "lock", format!("{i}").as_bytes(), None, Duration::from_secs(60)).await
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => won += 1,
                Err(StoreError::Conflict(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(won, 1);
    };

    kv_expired_keys_are_never_returned => |s: Store| async move {
        let kv = &s.kv;
        kv.set(NS, "short", b"v", Duration::from_millis(300)).await.unwrap();
        kv.incr(NS, "count", 5, Duration::from_millis(300)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(kv.get(NS, "short").await, Ok(None));
        // Expired counts as absent for "only if absent" and for counters.
        kv.cas(NS, "short", b"new", None, Duration::from_secs(60)).await.unwrap();
        assert_eq!(kv.incr(NS, "count", 1, Duration::from_secs(60)).await.unwrap().value, 1);
        assert_eq!(kv.delete(NS, "gone").await, Ok(false));
    };

    kv_incr_window_is_fixed => |s: Store| async move {
        let kv = &s.kv;
        let first = kv.incr(NS, "rate", 1, Duration::from_millis(1500)).await.unwrap();
        assert_eq!(first.value, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A later increment with a longer window does not extend it.
        let second = kv.incr(NS, "rate", 2, Duration::from_secs(60)).await.unwrap();
        assert_eq!(second.value, 3);
        assert!(second.expires_in < first.expires_in, "{second:?} vs {first:?}");
        assert!(second.expires_in <= Duration::from_millis(1100));
        tokio::time::sleep(second.expires_in + Duration::from_millis(200)).await;
        let third = kv.incr(NS, "rate", 1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(third.value, 1, "a new window starts over");
        assert!(third.expires_in > Duration::from_secs(50));
        // The counter reads back as a decimal value.
        assert_eq!(kv.get(NS, "rate").await.unwrap().unwrap().value, b"1");
        assert_eq!(kv.incr(NS, "rate", -4, Duration::from_secs(60)).await.unwrap().value, -3);
    };

    kv_incr_is_atomic => |s: Store| async move {
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let kv = s.kv.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..25 {
                    kv.incr(NS, "hits", 1, Duration::from_secs(60)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.kv.get(NS, "hits").await.unwrap().unwrap().value, b"500");
    };

    kv_refuses_bad_input_and_stores_nothing => |s: Store| async move {
        let kv = &s.kv;
        let ttl = Duration::from_secs(60);
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        let invalid = |r: Result<u64, StoreError>| matches!(r, Err(StoreError::Invalid(_)));
        assert!(invalid(kv.set(NS, &long_key, b"v", ttl).await));
        assert!(invalid(kv.set(NS, "k", &big, ttl).await));
        assert!(invalid(kv.set(NS, "k", b"v", Duration::ZERO).await), "a TTL is mandatory");
        assert!(invalid(kv.set(NS, "k", b"v", Duration::from_secs(3601)).await), "past the cap");
        assert!(invalid(kv.cas(NS, "k", &big, None, ttl).await));
        assert!(invalid(kv.set(NS, "", b"v", ttl).await));
        assert!(invalid(kv.set("", "k", b"v", ttl).await));
        assert!(matches!(kv.incr(NS, "k", 1, Duration::ZERO).await, Err(StoreError::Invalid(_))));
        assert_eq!(kv.get(NS, "k").await, Ok(None));
        // The largest key and value are fine.
        kv.set(NS, &long_key[1..], &big[1..], ttl).await.unwrap();
        assert_eq!(kv.get(NS, &long_key[1..]).await.unwrap().unwrap().value.len(), MAX_VALUE_BYTES);
        // A value that is not a number is not a counter.
        kv.set(NS, "text", b"abc", ttl).await.unwrap();
        assert!(matches!(kv.incr(NS, "text", 1, ttl).await, Err(StoreError::Invalid(_))));
        assert_eq!(kv.get(NS, "text").await.unwrap().unwrap().value, b"abc");
        kv.set(NS, "max", i64::MAX.to_string().as_bytes(), ttl).await.unwrap();
        assert!(matches!(kv.incr(NS, "max", 1, ttl).await, Err(StoreError::Invalid(_))));
    };

    kv_sweeper_deletes_expired_keys => |s: Store| async move {
        for i in 0..50 {
            s.kv.set(NS, &format!("old{i}"), b"v", Duration::from_millis(100)).await.unwrap();
        }
        s.kv.set(NS, "kept", b"v", Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(s.kv.sweep().await, Ok(50));
        assert_eq!(s.kv.sweep().await, Ok(0));
        assert!(s.kv.get(NS, "kept").await.unwrap().is_some());
    };

    queue_enqueue_claim_ack => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("Q1")).await.unwrap();
        let stats = q.stats().await.unwrap();
        assert_eq!((stats.ready, stats.leased, stats.dead), (1, 0, 0));
        let c = q.claim("consumer-a", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(c.message.message, message("Q1").message);
        assert_eq!(c.message.summary.rcpt_to, message("Q1").rcpt_to);
        assert_eq!(c.message.summary.mail_from, "anne@example.com");
        assert_eq!(c.message.facts, message("Q1").facts);
        assert_eq!((c.lease.id.as_str(), c.lease.attempt), ("Q1", 1));
        assert_eq!(c.message.summary.state, State::Leased);
        assert_eq!(c.message.summary.consumer.as_deref(), Some("consumer-a"));
        assert_eq!(q.claim("consumer-b", Duration::from_secs(60)).await, Ok(None));
        q.ack(&c.lease).await.unwrap();
        assert!(matches!(q.ack(&c.lease).await, Err(StoreError::Conflict(_))));
        assert_eq!(q.show("Q1").await, Ok(None));
        assert_eq!(q.stats().await.unwrap().ready + q.stats().await.unwrap().leased, 0);
    };

    queue_id_is_unique => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("DUP")).await.unwrap();
        let mut other = message("DUP");
        other.message = b"different".to_vec();
        assert!(matches!(q.enqueue(other).await, Err(StoreError::Conflict(_))));
        assert_eq!(q.show("DUP").await.unwrap().unwrap().message, message("DUP").message);
        assert!(matches!(q.enqueue(NewMessage { id: String::new(), ..message("x") }).await, Err(StoreError::Invalid(_))));
    };

    queue_release_backs_off => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("R")).await.unwrap();
        let c = q.claim("a", Duration::from_secs(60)).await.unwrap().unwrap();
        let state = q.release(&c.lease, "452 mailbox full", Some(Duration::from_millis(500))).await.unwrap();
        assert_eq!(state, State::Ready);
        let shown = q.show("R").await.unwrap().unwrap().summary;
        assert_eq!(shown.last_error.as_deref(), Some("452 mailbox full"));
        assert_eq!(q.claim("a", Duration::from_secs(60)).await, Ok(None), "not before the back-off");
        tokio::time::sleep(Duration::from_millis(700)).await;
        let again = q.claim("b", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(again.lease.attempt, 2);
        // The first claim's lease is gone.
        assert!(matches!(q.release(&c.lease, "late", None).await, Err(StoreError::Conflict(_))));
        // The default back-off doubles: 200 ms, then 400 ms.
        assert_eq!(q.backoff_after(1), Duration::from_millis(200));
        assert_eq!(q.backoff_after(2), Duration::from_millis(400));
    };

    queue_lease_expiry_hands_over => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("L")).await.unwrap();
        let a = q.claim("a", Duration::from_millis(300)).await.unwrap().unwrap();
        assert_eq!(q.claim("b", Duration::from_secs(60)).await, Ok(None));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let b = q.claim("b", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!((b.lease.id.as_str(), b.lease.attempt), ("L", 2));
        // The consumer whose lease ended can't ack under the new holder.
        assert!(matches!(q.ack(&a.lease).await, Err(StoreError::Conflict(_))));
        q.ack(&b.lease).await.unwrap();
    };

    queue_dead_letter_after_attempts => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("D")).await.unwrap();
        for attempt in 1..=3 {
            let c = q.claim("a", Duration::from_secs(60)).await.unwrap().unwrap();
            assert_eq!(c.lease.attempt, attempt);
            let state = q.release(&c.lease, "550 no", Some(Duration::ZERO)).await.unwrap();
            assert_eq!(state, if attempt < 3 { State::Ready } else { State::Dead });
        }
        assert_eq!(q.claim("a", Duration::from_secs(60)).await, Ok(None));
        let dead = q.list(Some(State::Dead), 10).await.unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!((dead[0].id.as_str(), dead[0].attempts), ("D", 3));
        assert_eq!(q.stats().await.unwrap().dead, 1);
        // Requeued: due now, attempts from zero.
        assert_eq!(q.requeue("D").await, Ok(true));
        assert_eq!(q.requeue("nope").await, Ok(false));
        let c = q.claim("a", Duration::from_secs(60)).await.unwrap().unwrap();
        assert_eq!(c.lease.attempt, 1);
    };

    queue_dead_letter_when_the_last_lease_ends => |s: Store| async move {
        let q = &s.queue;
        q.enqueue(message("E")).await.unwrap();
        for _ in 0..3 {
            q.claim("crashing", Duration::from_millis(100)).await.unwrap().unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(q.claim("a", Duration::from_secs(60)).await, Ok(None));
        let shown = q.show("E").await.unwrap().unwrap().summary;
        assert_eq!((shown.state, shown.attempts), (State::Dead, 3));
    };

    queue_list_show_delete => |s: Store| async move {
        let q = &s.queue;
        for id in ["A1", "A2", "A3"] {
            q.enqueue(message(id)).await.unwrap();
        }
        let all = q.list(None, 100).await.unwrap();
        assert_eq!(all.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["A1", "A2", "A3"]);
        assert_eq!(all[0].size, message("A1").message.len() as u64);
        assert_eq!(q.list(None, 2).await.unwrap().len(), 2);
        assert_eq!(q.list(Some(State::Dead), 100).await.unwrap().len(), 0);
        assert_eq!(q.delete("A2").await, Ok(true));
        assert_eq!(q.delete("A2").await, Ok(false));
        assert_eq!(q.show("A2").await, Ok(None));
        let stats = q.stats().await.unwrap();
        assert_eq!(stats.ready, 2);
        assert!(stats.oldest_age_ms.is_some_and(|a| a >= 0));
    };

    queue_concurrent_enqueues_and_claims => |s: Store| async move {
        let mut tasks = Vec::new();
        for i in 0..200 {
            let q = s.queue.clone();
            tasks.push(tokio::spawn(async move { q.enqueue(message(&format!("C{i}"))).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(s.queue.stats().await.unwrap().ready, 200);
        let mut consumers = Vec::new();
        for c in 0..8 {
            let q = s.queue.clone();
            consumers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(claim) = q.claim(&format!("c{c}"), Duration::from_secs(60)).await.unwrap() {
                    q.ack(&claim.lease).await.unwrap();
                    got.push(claim.lease.id);
                }
                got
            }));
        }
        let mut seen = HashSet::new();
        for c in consumers {
            for id in c.await.unwrap() {
                assert!(seen.insert(id.clone()), "{id} claimed twice");
            }
        }
        assert_eq!(seen.len(), 200);
    };
}

/// PostgreSQL stopped: every call is `unavailable` (never a success), and
/// the same store works again once the server is back, by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_is_unavailable_and_recovers() {
    let pg = pg::Postgres::start();
    let store = Store::open(&settings(BackendSettings::Postgres {
        url: pg.url_of("postgres"),
        pool_size: 4,
    }))
    .unwrap();
    store.queue.enqueue(message("before")).await.unwrap();
    store
        .kv
        .set(NS, "k", b"v", Duration::from_secs(60))
        .await
        .unwrap();

    pg.stop();
    assert!(matches!(
        store.queue.enqueue(message("during")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.kv.get(NS, "k").await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.kv.incr(NS, "n", 1, Duration::from_secs(60)).await,
        Err(StoreError::Unavailable(_))
    ));

    pg.resume();
    store.queue.enqueue(message("after")).await.unwrap();
    assert_eq!(store.kv.get(NS, "k").await.unwrap().unwrap().value, b"v");
    let ids: Vec<String> = store
        .queue
        .list(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(ids, ["before", "after"]);
}

/// A server started while PostgreSQL is down opens its store anyway and
/// works once the database is reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_can_start_after_the_store() {
    let pg = pg::Postgres::start();
    pg.stop();
    let store = Store::open(&settings(BackendSettings::Postgres {
        url: pg.url_of("postgres"),
        pool_size: 2,
    }))
    .unwrap();
    assert!(matches!(
        store.kv.get(NS, "k").await,
        Err(StoreError::Unavailable(_))
    ));
    pg.resume();
    store
        .kv
        .set(NS, "k", b"v", Duration::from_secs(60))
        .await
        .unwrap();
}

/// SQLite: what `enqueue` acknowledged is in the file, read back by another
/// connection (as `wasmtp queue` does after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_reopening() {
    let dir = TempDir::new();
    let s = settings(BackendSettings::Sqlite { dir: dir.0.clone() });
    {
        let store = Store::open(&s).unwrap();
        store.queue.enqueue(message("kept")).await.unwrap();
        store
            .kv
            .set(NS, "k", b"v", Duration::from_secs(60))
            .await
            .unwrap();
    }
    let store = Store::open(&s).unwrap();
    assert!(store.queue.show("kept").await.unwrap().is_some());
    assert_eq!(store.kv.get(NS, "k").await.unwrap().unwrap().value, b"v");
}

/// Without group commit every enqueue is its own transaction; the outcome
/// is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_group_commit() {
    let dir = TempDir::new();
    let mut s = settings(BackendSettings::Sqlite { dir: dir.0.clone() });
    s.group_commit = false;
    let store = Store::open(&s).unwrap();
    let url = pg::Postgres::shared().database();
    let mut p = settings(BackendSettings::Postgres { url, pool_size: 4 });
    p.group_commit = false;
    let pg_store = Store::open(&p).unwrap();
    for store in [store, pg_store] {
        let mut tasks = Vec::new();
        for i in 0..50 {
            let q = store.queue.clone();
            tasks.push(tokio::spawn(async move {
                q.enqueue(message(&format!("G{i}"))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.queue.stats().await.unwrap().ready, 50);
    }
}

/// Figures, not a check: enqueue rate with and without group commit and
/// key-value latency, on both backends. Run on purpose:
/// `cargo test --test store figures -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn figures() {
    let dir = TempDir::new();
    let pg = pg::Postgres::shared();
    for group_commit in [true, false] {
        for (name, backend) in [
            (
                "sqlite",
                BackendSettings::Sqlite {
                    dir: dir.0.join(format!("gc-{group_commit}")),
                },
            ),
            (
                "postgres",
                BackendSettings::Postgres {
                    url: pg.database(),
                    pool_size: 16,
                },
            ),
        ] {
            let mut s = settings(backend);
            s.group_commit = group_commit;
            let store = Store::open(&s).unwrap();
            for sessions in [1usize, 50] {
                let per = if sessions == 1 { 200 } else { 20 };
                let started = std::time::Instant::now();
                let mut tasks = Vec::new();
                for t in 0..sessions {
                    let q = store.queue.clone();
                    tasks.push(tokio::spawn(async move {
                        for i in 0..per {
                            let mut m = message(&format!("F{sessions}-{t}-{i}"));
                            m.message = vec![b'x'; 1024];
                            q.enqueue(m).await.unwrap();
                        }
                    }));
                }
                for t in tasks {
                    t.await.unwrap();
                }
                let n = sessions * per;
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "enqueue {name:8} group_commit={group_commit:5} sessions={sessions:2}: {n} x 1 KiB in {secs:.2} s = {:.0} msgs/s",
                    n as f64 / secs
                );
            }
            if group_commit {
                let mut lat = Vec::new();
                for i in 0..500 {
                    let t = std::time::Instant::now();
                    store
                        .kv
                        .incr(NS, &format!("k{}", i % 50), 1, Duration::from_secs(60))
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat.sort();
                let mut get = Vec::new();
                for i in 0..500 {
                    let t = std::time::Instant::now();
                    store.kv.get(NS, &format!("k{}", i % 50)).await.unwrap();
                    get.push(t.elapsed());
                }
                get.sort();
                println!(
                    "kv {name:8} incr p50 {:?} p99 {:?}; get p50 {:?} p99 {:?} (500 sequential calls)",
                    lat[250], lat[495], get[250], get[495]
                );
            }
        }
    }
}
