//! The `streamwal` binary on object storage, as a real process against a
//! real S3-protocol server: `verify`, `dump` and `inspect` take a URL and
//! report a healthy log, a context, and a damaged object by name and
//! offset; `demo --store URL` kills workers whose logs and checkpoints are
//! on the server and still counts every acknowledged record once. Needs
//! `STREAMWAL_S3_URL` (an in-memory store cannot be shared with a child
//! process); skipped without, failed without if `STREAMWAL_REQUIRE_S3` is
//! set.
#![cfg(feature = "object-store")]

#[path = "../../tests/it/common/mod.rs"]
mod common;

use common::context::add;
use common::objects::{Backend, backends, fetch, plant};
use std::collections::BTreeMap;
use std::process::{Command, Output};
use streamwal::object::log_object_name;
use streamwal::recovery::ContextOptions;
use streamwal::tracker::BlockInfo;
use streamwal::{Wal, WalOptions};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_streamwal"))
        .args(args)
        .output()
        .expect("run the streamwal binary")
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The S3 backend and its base URL, if configured.
fn s3(test: &str) -> Option<(std::sync::Arc<dyn Backend>, String)> {
    let b = backends(test).into_iter().find(|b| b.name() == "s3")?;
    let url = b.location("x").url().trim_end_matches("/x").to_string();
    Some((b, url))
}

#[test]
fn verify_dump_and_inspect_take_a_url() {
    let Some((b, base)) = s3("cli_url") else {
        return;
    };
    let log_url = format!("{base}/log");
    let wal = Wal::open(b.location("log"), WalOptions::default()).unwrap();
    let hs: Vec<_> = (0..5)
        .map(|i| wal.append(format!("record {i}").as_bytes()).unwrap())
        .collect();
    drop(wal);

    let o = run(&["verify", &log_url]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("5 record(s)"), "{}", out(&o));
    let o = run(&["dump", &log_url]);
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<String> = out(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[3].contains("lsn=4") && lines[3].ends_with("text=record 3"));

    // A flipped byte in one object: verify names the object and offset.
    let name = log_object_name(hs[2].segment());
    let mut bytes = fetch(&*b, "log", &name);
    let at = hs[2].offset() as usize + 40;
    bytes[at] ^= 1;
    plant(&*b, "log", &name, bytes);
    let o = run(&["verify", &log_url]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let text = out(&o);
    assert!(
        text.contains(&format!("{name} offset {}", hs[2].offset())),
        "{text}"
    );
    let o = run(&["dump", &log_url]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(out(&o).lines().count(), 4, "the damaged record is skipped");

    // A context: checkpoints, journal and receiver log below one URL.
    let ctx_url = format!("{base}/ctx");
    let ctx = streamwal::StreamingContext::builder(b.location("ctx"))
        .options(ContextOptions::new(1_000))
        .now_ms(0)
        .get_or_create(BTreeMap::<String, u64>::new)
        .unwrap();
    let handle = ctx.receiver_log.append(b"block").unwrap();
    ctx.tracker
        .add_block(BlockInfo {
            stream_id: 0,
            handle,
            records: 1,
            receive_time: 1,
        })
        .unwrap();
    ctx.tracker.allocate_blocks_to_batch(1_000).unwrap();
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 1_000,
        pending_batches: vec![1_000],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    drop(ctx);
    let o = run(&["verify", &ctx_url]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("checkpoints 1 of 1 valid"), "{}", out(&o));
    let o = run(&["inspect", &ctx_url]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert!(out(&o).contains("checkpoint 1000  valid"), "{}", out(&o));

    // Journal events a checkpoint needs are gone (a floor planted past
    // them): verify says so, naming the journal.
    let gap_url = format!("{base}/gap");
    let ctx = streamwal::StreamingContext::builder(b.location("gap"))
        .options(ContextOptions::new(1_000))
        .now_ms(0)
        .get_or_create(BTreeMap::<String, u64>::new)
        .unwrap();
    add(&ctx, 0, b"block", 1);
    ctx.checkpoint(streamwal::CheckpointAt {
        batch_time: 1_000,
        pending_batches: vec![],
        source_offsets: BTreeMap::new(),
    })
    .unwrap();
    for t in 2..5 {
        add(&ctx, 0, b"block", t);
    }
    let events: Vec<_> = ctx.tracker.journal().iter().map(|r| r.unwrap().0).collect();
    drop(ctx);
    let o = run(&["verify", &gap_url]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    let second_after = events[events.len() - 2];
    plant(
        &*b,
        "gap/journal",
        &format!("floor-{:020}", second_after.segment()),
        vec![],
    );
    let o = run(&["verify", &gap_url]);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    assert!(
        out(&o).contains("is needed but the journal starts at LSN"),
        "{}",
        out(&o)
    );

    // Nothing there at all is an error, not a healthy empty log.
    for cmd in ["verify", "inspect", "dump"] {
        let o = run(&[cmd, &format!("{base}/nothing")]);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", out(&o));
        assert!(out(&o).is_empty(), "{cmd}: {}", out(&o));
    }
}

#[test]
fn the_demo_runs_with_its_logs_on_object_storage() {
    let Some((_, base)) = s3("cli_demo") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = run(&[
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--store",
        &base,
        "--kills",
        "2",
        "--seconds",
        "6",
    ]);
    let text = out(&o);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("verdict                       PASS"),
        "{text}"
    );
    assert!(
        text.contains("lost / duplicated / invented  0 / 0 / 0"),
        "{text}"
    );
}
