//! Faults at the HTTP level, between the checkpoint store or the log and a
//! real S3-protocol server: a proxy on loopback that passes requests
//! through, loses the responses to PUTs after forwarding them (the object
//! may have been stored), holds them back past the client's timeout,
//! answers PUTs with 503, or refuses connections. A write is acknowledged
//! only if its object is there, never stored twice, and a takeover whose
//! answers were lost leaves a prefix the next driver can take over. Needs
//! `STREAMWAL_S3_URL` and `AWS_ENDPOINT` (as `.ci/run` sets them); skipped
//! without, failed without if `STREAMWAL_REQUIRE_S3` is set.
#![cfg(feature = "object-store")]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;
use streamwal::Error;
use streamwal::checkpoint::{Checkpoint, CheckpointOptions};
use streamwal::object::object_store::aws::AmazonS3Builder;
use streamwal::object::object_store::{BackoffConfig, ClientOptions, RetryConfig};
use streamwal::object::{ObjectCheckpointStore, ObjectLocation};

const PASS: u8 = 0;
/// Forward PUT requests, drop their responses and close the connection:
/// the object may have been stored, the client cannot know.
const LOSE_PUT_RESPONSES: u8 = 1;
/// Accept connections and close them at once.
const REFUSE: u8 = 2;
/// Forward PUT requests and hold their responses back for 3 s, past the
/// client's 2 s timeout: the object is stored, the client retries.
const DELAY_PUT_RESPONSES: u8 = 3;
/// Answer every PUT with `503 Service Unavailable` without forwarding it.
const FAIL_PUTS: u8 = 4;

/// Start the proxy in front of `upstream` (host:port); returns its port.
fn proxy(upstream: String, mode: Arc<AtomicU8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            if mode.load(Ordering::SeqCst) == REFUSE {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            // Whether the request being answered on this connection is a PUT
            // (requests on one connection are sequential).
            let put = Arc::new(AtomicBool::new(false));
            let p2 = put.clone();
            let m2 = mode.clone();
            std::thread::spawn(move || pump(client, server, Side::Request(p2, m2)));
            let mode = mode.clone();
            std::thread::spawn(move || pump(s2, c2, Side::Response(mode, put)));
        }
    });
    port
}

enum Side {
    /// Client to server: note whether each request is a PUT (and answer
    /// it with a 503 in mode `FAIL_PUTS`).
    Request(Arc<AtomicBool>, Arc<AtomicU8>),
    /// Server to client: cut as the mode says.
    Response(Arc<AtomicU8>, Arc<AtomicBool>),
}

/// Copy `from` to `to`; on the response side, stop and close both when the
/// mode says this response is lost (or the proxy now refuses).
fn pump(mut from: TcpStream, mut to: TcpStream, side: Side) {
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        match &side {
            Side::Request(put, mode) => {
                // A chunk that starts a request starts with its method.
                for m in [&b"PUT "[..], b"GET ", b"HEAD ", b"DELETE ", b"POST "] {
                    if buf[..n].starts_with(m) {
                        put.store(m == b"PUT ", Ordering::SeqCst);
                    }
                }
                if put.load(Ordering::SeqCst) && mode.load(Ordering::SeqCst) == FAIL_PUTS {
                    let _ = from.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    break;
                }
            }
            Side::Response(mode, put) => match mode.load(Ordering::SeqCst) {
                PASS | FAIL_PUTS => {}
                LOSE_PUT_RESPONSES | DELAY_PUT_RESPONSES if !put.load(Ordering::SeqCst) => {}
                DELAY_PUT_RESPONSES => std::thread::sleep(Duration::from_secs(3)),
                _ => break,
            },
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

struct Setup {
    mode: Arc<AtomicU8>,
    bucket: String,
    prefix: String,
    port: u16,
}

impl Setup {
    fn new(test: &str) -> Option<Setup> {
        let (Ok(url), Ok(endpoint)) = (
            std::env::var("STREAMWAL_S3_URL"),
            std::env::var("AWS_ENDPOINT"),
        ) else {
            assert!(
                std::env::var_os("STREAMWAL_REQUIRE_S3").is_none(),
                "STREAMWAL_REQUIRE_S3 is set but STREAMWAL_S3_URL or AWS_ENDPOINT is not"
            );
            eprintln!("{test}: STREAMWAL_S3_URL not set, skipped");
            return None;
        };
        let rest = url.strip_prefix("s3://").expect("an s3:// URL");
        let (bucket, base) = rest.split_once('/').unwrap_or((rest, ""));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let mode = Arc::new(AtomicU8::new(PASS));
        let port = proxy(upstream, mode.clone());
        Some(Setup {
            mode,
            bucket: bucket.to_string(),
            prefix: format!("{}/{test}-{nanos}", base.trim_matches('/')),
            port,
        })
    }

    /// A location through the proxy, with short timeouts and few retries.
    fn location(&self) -> ObjectLocation {
        let store = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_endpoint(format!("http://127.0.0.1:{}", self.port))
            .with_allow_http(true)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_timeout(Duration::from_secs(2))
                    .with_connect_timeout(Duration::from_secs(2)),
            )
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(10),
                    max_backoff: Duration::from_millis(50),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(5),
            })
            .build()
            .unwrap();
        ObjectLocation::with_store(Arc::new(store), &self.prefix).unwrap()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

fn ckpt(batch_time: u64) -> Checkpoint<String> {
    Checkpoint {
        batch_time,
        batch_interval_ms: 1000,
        graph: format!("graph {batch_time}"),
        graph_version: 1,
        pending_batches: vec![],
        journal_lsn: 0,
        tracker: Default::default(),
        source_offsets: Default::default(),
    }
}

fn latest(store: &ObjectCheckpointStore) -> Option<u64> {
    store.latest::<String>().unwrap().checkpoint.map(|(_, c)| {
        assert_eq!(c.graph, format!("graph {}", c.batch_time), "damaged");
        c.batch_time
    })
}

#[test]
fn a_write_whose_answer_was_lost_is_an_error_or_verified() {
    let Some(s) = Setup::new("faults_write") else {
        return;
    };
    let store = ObjectCheckpointStore::open(s.location(), CheckpointOptions::default()).unwrap();
    store.write(&ckpt(10)).unwrap();

    // The PUT reaches the server; its answer never comes back. Either the
    // write fails, or (a retry found the object) it read the object back
    // and found its own bytes: then the checkpoint must be there.
    s.set(LOSE_PUT_RESPONSES);
    let acked = store.write(&ckpt(20)).is_ok();
    s.set(PASS);
    let reader = ObjectCheckpointStore::open_read_only(s.location());
    let got = latest(&reader);
    if acked {
        assert_eq!(got, Some(20));
    } else {
        // Not acknowledged: it may or may not have landed.
        assert!(got == Some(10) || got == Some(20), "{got:?}");
    }

    // The server is unreachable: an error, and nothing lands.
    s.set(REFUSE);
    assert!(matches!(store.write(&ckpt(30)), Err(Error::Remote { .. })));
    s.set(PASS);
    assert_ne!(latest(&reader), Some(30));
    store.write(&ckpt(40)).unwrap();
    assert_eq!(latest(&reader), Some(40));
}

#[test]
fn a_takeover_whose_answers_were_lost_is_finished_by_the_next_driver() {
    let Some(s) = Setup::new("faults_takeover") else {
        return;
    };
    let first = ObjectCheckpointStore::open(s.location(), CheckpointOptions::default()).unwrap();
    first.write(&ckpt(10)).unwrap();
    // A driver's takeover PUTs reach the server but it hears nothing back:
    // its fence lands (it lists fine), and it cannot tell.
    s.set(LOSE_PUT_RESPONSES);
    let lost = ObjectCheckpointStore::open(s.location(), CheckpointOptions::default());
    s.set(PASS);
    if let Ok(lost) = &lost {
        // Its retry found its own fence (by nonce) and sealed: it owns the
        // next epoch.
        assert_eq!(lost.epoch(), Some(first.epoch().unwrap() + 1));
    }
    // The first driver is fenced either way: the fence landed.
    assert!(matches!(first.write(&ckpt(15)), Err(Error::Fenced { .. })));
    // The next driver seals whatever the lost one left and recovers the
    // acknowledged checkpoint.
    let next = ObjectCheckpointStore::open(s.location(), CheckpointOptions::default()).unwrap();
    assert_eq!(latest(&next), Some(10));
    next.write(&ckpt(20)).unwrap();
    assert_eq!(latest(&next), Some(20));
}

fn log_records(s: &Setup) -> Vec<Vec<u8>> {
    let reader = streamwal::Wal::open(
        s.location(),
        streamwal::WalOptions {
            recovery_mode: streamwal::RecoveryMode::Salvage,
            ..streamwal::WalOptions::default()
        },
    )
    .unwrap();
    assert!(reader.recovery_report().problems.is_empty());
    reader.iter().map(|r| r.unwrap().1).collect()
}

#[test]
fn a_log_append_whose_answer_was_lost_is_an_error_or_stored_once() {
    let Some(s) = Setup::new("faults_log") else {
        return;
    };
    let wal = streamwal::Wal::open(s.location(), streamwal::WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();

    // The PUT reaches the server, its answer is lost, the client retries:
    // the retry meets the stored object. The append either fails, or read
    // the object back and found its own bytes; never a second copy.
    s.set(LOSE_PUT_RESPONSES);
    let acked = wal.append(b"two").is_ok();
    s.set(PASS);
    let got = log_records(&s);
    let twos = got.iter().filter(|r| r.as_slice() == b"two").count();
    eprintln!("lost answer: acknowledged {acked}, stored {twos} time(s)");
    if acked {
        assert_eq!(twos, 1, "{got:?}");
        wal.append(b"three").unwrap();
    } else {
        assert!(twos <= 1, "{got:?}");
        assert!(wal.is_poisoned(), "a failed append poisons the log");
    }
    drop(wal);

    // The server is unreachable: an error, and nothing lands.
    let wal = streamwal::Wal::open(s.location(), streamwal::WalOptions::default()).unwrap();
    let before = log_records(&s);
    s.set(REFUSE);
    assert!(matches!(wal.append(b"four"), Err(Error::Remote { .. })));
    s.set(PASS);
    assert_eq!(log_records(&s), before, "a refused append stored nothing");
    assert!(matches!(wal.append(b"five"), Err(Error::Poisoned)));
    drop(wal);
    // The next writer goes on from exactly the acknowledged records.
    let wal = streamwal::Wal::open(s.location(), streamwal::WalOptions::default()).unwrap();
    wal.append(b"six").unwrap();
    let got = log_records(&s);
    assert_eq!(got.first().map(Vec::as_slice), Some(&b"one"[..]));
    assert_eq!(got.last().map(Vec::as_slice), Some(&b"six"[..]));
    assert!(
        !got.iter()
            .any(|r| r.as_slice() == b"four" || r.as_slice() == b"five")
    );
}

#[test]
fn a_log_append_whose_answer_is_late_or_refused_by_the_server_is_settled() {
    let Some(s) = Setup::new("faults_log_slow") else {
        return;
    };
    let wal = streamwal::Wal::open(s.location(), streamwal::WalOptions::default()).unwrap();
    wal.append(b"one").unwrap();
    // The answer comes after the client gave up and retried: the record is
    // either acknowledged and stored once, or not acknowledged.
    s.set(DELAY_PUT_RESPONSES);
    let acked = wal.append(b"two").is_ok();
    s.set(PASS);
    let got = log_records(&s);
    let twos = got.iter().filter(|r| r.as_slice() == b"two").count();
    eprintln!("late answer: acknowledged {acked}, stored {twos} time(s)");
    assert!(twos <= 1, "{got:?}");
    if acked {
        assert_eq!(twos, 1, "{got:?}");
    }
    drop(wal);

    // The server answers 503 to every PUT, through the client's retries:
    // an error, nothing stored, the log poisoned.
    let wal = streamwal::Wal::open(s.location(), streamwal::WalOptions::default()).unwrap();
    let before = log_records(&s);
    s.set(FAIL_PUTS);
    let r = wal.append(b"three");
    s.set(PASS);
    assert!(matches!(r, Err(Error::Remote { .. })), "{r:?}");
    assert!(wal.is_poisoned());
    assert_eq!(log_records(&s), before);
}
