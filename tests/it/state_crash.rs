//! The README's recovery recipe, followed to the letter in a real process
//! killed with SIGKILL: a child engine receives lines (`w<ID> all`),
//! acknowledges each once it is durable, runs a batch at each `.`, and
//! keeps a running word count both ways the README shows (keyed state and
//! the checkpointed graph). The test kills it at random moments, restarts
//! it, and at the end checks, from a context it recovers itself, that every
//! acknowledged line was counted exactly once and nothing else was, and
//! that the graph's count agrees.
//!
//! The child's functions are the README's, word for word where the README
//! has them (`words_of`, `write_output`, `run_batch`, `recover`, `receive`).

use crate::common::rng::{Rng, seed_from_env};
use crate::common::test_name;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use streamwal::recovery::CheckpointAt;
use streamwal::tracker::BlockInfo;
use streamwal::{Result, StreamingContext};

const DIR_ENV: &str = "STREAMWAL_STATE_CRASH_DIR";
const NOW_ENV: &str = "STREAMWAL_STATE_CRASH_NOW";

// ------------------------------------------------- the README's functions

#[derive(Default, Serialize, Deserialize)]
struct Graph {
    counts: BTreeMap<String, u64>,
}

fn words_of(data: &BTreeMap<u32, Vec<Vec<u8>>>) -> Vec<String> {
    let text = data
        .values()
        .flatten()
        .map(|b| String::from_utf8_lossy(b).into_owned());
    text.flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect()
}

fn write_output(out: &Path, t: u64, words: usize) -> Result<()> {
    let io = |e| streamwal::Error::Io {
        op: "sink",
        path: out.into(),
        source: e,
    };
    let tmp = out.join(format!("batch-{t}.tmp"));
    std::fs::write(&tmp, words.to_string()).map_err(io)?;
    std::fs::rename(&tmp, out.join(format!("batch-{t}.txt"))).map_err(io)
}

fn run_batch(ctx: &mut StreamingContext<Graph>, out: &Path, t: u64) -> Result<()> {
    ctx.begin_batch(t)?;
    let blocks = ctx.tracker.allocate_blocks_to_batch(t)?;
    let words = words_of(&ctx.read_batch(&blocks)?);
    let counts = ctx.state::<String, u64>("counts")?;
    for w in &words {
        let n = counts.get(w)?.unwrap_or(0);
        counts.put(w.clone(), n + 1)?;
    }
    write_output(out, t, words.len())?;
    ctx.commit_batch(t)?;
    for w in words {
        *ctx.graph.counts.entry(w).or_default() += 1;
    }
    ctx.checkpoint(CheckpointAt::batch(t))?;
    ctx.tracker.cleanup(t)
}

fn recover(ctx: &mut StreamingContext<Graph>, out: &Path) -> Result<()> {
    let Some(recovered) = ctx.recovered.clone() else {
        return Ok(());
    };
    for batch in &recovered.committed_after_checkpoint {
        for w in words_of(&ctx.read_batch(&batch.blocks)?) {
            *ctx.graph.counts.entry(w).or_default() += 1;
        }
    }
    for batch in &recovered.batches {
        run_batch(ctx, out, batch.batch_time)?;
    }
    Ok(())
}

fn receive(ctx: &StreamingContext<Graph>, line: &str, at: u64) -> Result<()> {
    let handle = ctx.receiver_log.append(line.as_bytes())?;
    ctx.tracker.add_block(BlockInfo {
        stream_id: 0,
        handle,
        records: 1,
        receive_time: at,
    })?;
    Ok(())
}

// ---------------------------------------------------------------- the child

/// The running counts the keyed state holds.
fn keyed_counts(ctx: &StreamingContext<Graph>) -> BTreeMap<String, u64> {
    let counts = ctx.state::<String, u64>("counts").unwrap();
    counts.iter().unwrap().into_iter().collect()
}

fn open(dir: &Path, now_ms: u64) -> Result<StreamingContext<Graph>> {
    StreamingContext::builder(dir.join("ctx"))
        .batch_interval_ms(1_000)
        .now_ms(now_ms)
        .get_or_create(Graph::default)
}

/// The engine. Prints `ack ID` once line `w<ID> all` is durable, `batch T`
/// once batch T committed, and at the end of its input `agree` (or
/// `disagree`) comparing the two counts, then `done`.
#[test]
#[ignore = "run by kill_nine_the_readme_recipe_counts_each_line_once as a child process"]
fn state_crash_child_main() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let now: u64 = std::env::var(NOW_ENV).unwrap().parse().unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut ctx = open(dir, now).expect("recover");
    recover(&mut ctx, &out).expect("rerun owed batches");
    let (state, _) = ctx.tracker.snapshot().unwrap();
    let mut next = state.last_allocated_time.max(now) + 1_000;
    let say = |line: String| {
        let mut o = std::io::stdout().lock();
        writeln!(o, "{line}").and_then(|()| o.flush()).unwrap();
    };
    say("open".into());
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap();
        if line == "." {
            run_batch(&mut ctx, &out, next).expect("batch");
            say(format!("batch {next}"));
            next += 1_000;
        } else {
            receive(&ctx, &line, next - 1).expect("receive");
            say(format!("ack {}", &line[1..line.find(' ').unwrap()]));
        }
    }
    run_batch(&mut ctx, &out, next).expect("last batch");
    let keyed = keyed_counts(&ctx);
    say(if keyed == ctx.graph.counts {
        "agree"
    } else {
        "disagree"
    }
    .into());
    say("done".into());
}

// --------------------------------------------------------------- the parent

/// Send lines `first..first + count`, with a `.` after every few; hand the
/// pipe back, so that the child sees the end of its input only when the
/// parent says so.
fn send(mut stdin: ChildStdin, first: u64, count: u64, seed: u64) -> (ChildStdin, u64) {
    let mut rng = Rng::new(seed);
    let mut sent = first;
    for id in first..first + count {
        let mut text = format!("w{id} all\n");
        if rng.below(6) == 0 {
            text.push_str(".\n");
        }
        if stdin.write_all(text.as_bytes()).is_err() {
            break;
        }
        sent = id + 1;
    }
    (stdin, sent)
}

#[test]
fn kill_nine_the_readme_recipe_counts_each_line_once() {
    let rounds: u64 = std::env::var("STREAMWAL_STATE_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed = seed_from_env("STREAMWAL_STATE_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let (mut sent, mut acked, mut newest_batch) = (0u64, BTreeSet::new(), 0u64);
    let mut batches_seen = 0;
    for round in 0..=rounds {
        let last = round == rounds;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                &test_name(module_path!(), "state_crash_child_main"),
                "--ignored",
                "--nocapture",
            ])
            .env(DIR_ENV, tmp.path())
            .env(NOW_ENV, (newest_batch + rng.below(3) * 1_000).to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let count = 20 + rng.below(200);
        let (first, sender_seed) = (sent, rng.next());
        let stdin = child.stdin.take().unwrap();
        let mut sender = Some(std::thread::spawn(move || {
            send(stdin, first, count, sender_seed)
        }));
        let mut finish_sending = || {
            if let Some(s) = sender.take() {
                let (stdin, n) = s.join().unwrap();
                drop(stdin); // the end of the child's input
                n
            } else {
                0
            }
        };
        let kill_after = rng.below(count);
        let mut acks_now = 0;
        let mut lines = Vec::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut buf = String::new();
        if last {
            // The end of the input: the child drains and stops by itself.
            sent = finish_sending();
        }
        loop {
            buf.clear();
            if stdout.read_line(&mut buf).unwrap() == 0 || !buf.ends_with('\n') {
                break;
            }
            let line = buf.trim_end().to_string();
            acks_now += u64::from(line.starts_with("ack "));
            lines.push(line);
            if !last && acks_now > kill_after {
                break;
            }
        }
        if !last {
            child.kill().unwrap(); // SIGKILL
        }
        let status = child.wait().unwrap();
        if !last {
            assert_eq!(
                status.signal(),
                Some(9),
                "round {round}: the child ended by itself"
            );
            // What it printed before it died was printed after the fact.
            loop {
                buf.clear();
                if stdout.read_line(&mut buf).unwrap() == 0 || !buf.ends_with('\n') {
                    break;
                }
                lines.push(buf.trim_end().to_string());
            }
        }
        if !last {
            sent = finish_sending();
        }
        for line in &lines {
            if let Some(id) = line.strip_prefix("ack ") {
                acked.insert(id.parse::<u64>().unwrap());
            } else if let Some(t) = line.strip_prefix("batch ") {
                newest_batch = newest_batch.max(t.parse().unwrap());
                batches_seen += 1;
            }
        }
        if last {
            assert!(status.success(), "the last child failed ({status})");
            assert!(
                lines.iter().any(|l| l == "agree"),
                "keyed state and the graph disagree (STREAMWAL_STATE_SEED={seed}): {:?}",
                lines.iter().rev().take(3).collect::<Vec<_>>()
            );
        }
    }
    // Recover once more, as an engine would, and read the counts.
    let ctx = open(tmp.path(), newest_batch).unwrap();
    let counts = keyed_counts(&ctx);
    let mut counted = 0;
    for (word, &n) in &counts {
        if word == "all" {
            continue;
        }
        let id: u64 = word[1..].parse().unwrap();
        assert!(
            id < sent,
            "w{id} was never sent (STREAMWAL_STATE_SEED={seed})"
        );
        assert_eq!(
            n, 1,
            "line {id} counted {n} times (STREAMWAL_STATE_SEED={seed})"
        );
        counted += 1;
    }
    for id in &acked {
        assert_eq!(
            counts.get(&format!("w{id}")),
            Some(&1),
            "acknowledged line {id} is not counted once (STREAMWAL_STATE_SEED={seed})"
        );
    }
    assert_eq!(counts.get("all"), Some(&counted), "the shared word's count");
    assert!(
        acked.len() > 100 && batches_seen > rounds,
        "the run proved little"
    );
    println!(
        "{rounds} kills: {sent} lines sent, {} acknowledged, {counted} counted once, {batches_seen} batches",
        acked.len()
    );
}
