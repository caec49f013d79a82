//! The `dedup_buckets` example, run as a real process.

use super::*;

/// Input records with plenty of duplicates (up to ~40 of each).
fn bucket_records(n: u64) -> Vec<String> {
    (0..n)
        .map(|i| format!("rec{}", i.wrapping_mul(2_654_435_761) % 97))
        .collect()
}

/// Check a sink's output, (batch time, bucket) -> records: no bucket holds a
/// duplicate; bucket k > 1 only holds records also in bucket k - 1 of the
/// same batch; buckets are numbered 1.. without a gap; and all of them
/// together hold exactly `input`, as a multiset.
fn check_buckets(output: &BTreeMap<(u64, usize), Vec<String>>, input: &[String]) {
    let mut per_batch: BTreeMap<u64, BTreeMap<usize, &Vec<String>>> = BTreeMap::new();
    for ((t, k), recs) in output {
        per_batch.entry(*t).or_default().insert(*k, recs);
    }
    for (t, buckets) in &per_batch {
        let ks: Vec<usize> = buckets.keys().copied().collect();
        assert_eq!(
            ks,
            (1..=ks.len()).collect::<Vec<_>>(),
            "batch {t}: buckets with a gap"
        );
        let mut previous: Option<HashSet<&String>> = None;
        for (k, recs) in buckets {
            let set: HashSet<&String> = recs.iter().collect();
            assert_eq!(
                set.len(),
                recs.len(),
                "batch {t} bucket {k} holds a duplicate"
            );
            assert!(!recs.is_empty(), "batch {t} bucket {k} is empty");
            if let Some(prev) = &previous {
                for r in recs.iter() {
                    assert!(
                        prev.contains(r),
                        "batch {t}: {r} is in bucket {k} but not in bucket {}",
                        k - 1
                    );
                }
            }
            previous = Some(set);
        }
    }
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for recs in output.values() {
        for r in recs {
            *got.entry(r).or_default() += 1;
        }
    }
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for r in input {
        *want.entry(r).or_default() += 1;
    }
    assert_eq!(got, want, "the sink's records are not exactly the input's");
}

fn lines_of(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .expect("utf-8 output")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The directory sink's files: `batch-T-bucket-K.txt`; no temp file left.
fn read_dir_sink(dir: &Path) -> BTreeMap<(u64, usize), Vec<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let key = name
            .strip_prefix("batch-")
            .and_then(|s| s.strip_suffix(".txt"))
            .and_then(|s| s.split_once("-bucket-"))
            .and_then(|(t, k)| Some((t.parse().ok()?, k.parse().ok()?)))
            .unwrap_or_else(|| panic!("unexpected file in the sink: {name}"));
        out.insert(key, lines_of(&std::fs::read(entry.path()).unwrap()));
    }
    out
}

/// Write `records[from..to]`, one per line; stop quietly if the child died.
fn feed(mut stdin: ChildStdin, records: Vec<String>) -> ChildStdin {
    let mut buf = String::new();
    for r in records {
        buf.push_str(&r);
        buf.push('\n');
    }
    let _ = stdin.write_all(buf.as_bytes());
    stdin
}

fn dedup_cmd(state: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("dedup_buckets");
    cmd.arg("--checkpoint")
        .arg(state)
        .arg("--out")
        .arg(out)
        .args(["--batch-ms", "40", "--block-ms", "10"])
        .stdin(Stdio::piped());
    cmd
}

/// Where the child resumes reading its input (its first line says).
fn resume_line(first: &str) -> u64 {
    if first == "fresh start" {
        return 0;
    }
    first
        .rsplit_once("resumes after line ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
}

#[test]
fn dedup_buckets_survives_kill_nine_exactly_once() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (state, out) = (tmp.path().join("state"), tmp.path().join("out"));
    const N: u64 = 6_000;
    let records = bucket_records(N);
    let mut reruns = 0;
    let mut stored_max = 0;

    // KILLS runs killed mid-stream, each fed the input from its start (a
    // replayable source) up to a growing limit, then a run fed everything.
    const KILLS: u64 = 5;
    for round in 0..=KILLS {
        let limit = if round < KILLS {
            N * (2 + round) / (KILLS + 3)
        } else {
            N
        };
        let mut run = Running::spawn(
            &mut dedup_cmd(&state, &out),
            tmp.path().join(format!("stderr-{round}")),
        );
        let stdin = run.child.stdin.take().unwrap();
        let input = records[..limit as usize].to_vec();
        let feeder = std::thread::spawn(move || feed(stdin, input));
        let first = run.next_line().expect("a first line");
        let resume = resume_line(&first);
        assert!(
            resume >= stored_max,
            "round {round}: resumes at line {resume}, but {stored_max} were stored (seed {seed})"
        );
        if round == KILLS {
            drop(feeder.join().unwrap()); // end of input: the example finishes
            run.finish();
            assert_eq!(
                run.log.last().map(String::as_str),
                Some(format!("done: {N} input lines stored").as_str()),
                "seed {seed}"
            );
        } else {
            // Kill once a random number of lines past the resume point is
            // durable: mid-block, mid-batch or mid-checkpoint.
            let target = resume + 1 + rng.below(limit.saturating_sub(resume));
            loop {
                let line = run.next_line().unwrap_or_else(|| {
                    panic!("round {round}: the example ended early: {}", run.stderr())
                });
                if let Some(n) = line.strip_prefix("stored ") {
                    stored_max = n.parse().unwrap();
                    if stored_max >= target {
                        break;
                    }
                }
            }
            run.kill9();
            drop(feeder.join().unwrap());
        }
        reruns += run.log.iter().filter(|l| l.ends_with("(rerun)")).count();
    }
    println!("{reruns} batches rerun after a kill");
    let output = read_dir_sink(&out);
    check_buckets(&output, &records);
    assert!(
        output.keys().any(|&(_, k)| k > 1),
        "the input's duplicates never made a second bucket"
    );
}

/// A tiny HTTP/1.1 server: stores each POST's body by path (so a repeated
/// POST is idempotent) and answers 503 to the very first request, to make
/// the client retry.
/// What the test's HTTP server received: path -> body of the last POST.
type Posted = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

fn http_server() -> (u16, Posted) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let store = Arc::new(Mutex::new(BTreeMap::new()));
    let shared = store.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut length = 0usize;
            let mut key = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let (name, value) = h.split_once(':').unwrap_or((&h, ""));
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "idempotency-key" => key = Some(value.trim().to_string()),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            let ok = reader.read_exact(&mut body).is_ok();
            let mut f = request.split(' ');
            let (method, path) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            let status = if first {
                first = false;
                "503 Service Unavailable"
            } else if ok && method == "POST" && key.is_some() {
                shared.lock().unwrap().insert(path.to_string(), body);
                "200 OK"
            } else {
                "400 Bad Request"
            };
            let mut conn = conn;
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, store)
}

#[test]
fn dedup_buckets_http_sink_delivers_every_bucket() {
    let tmp = tempfile::tempdir().unwrap();
    let records = bucket_records(2_000);
    let input = tmp.path().join("records.txt");
    std::fs::write(&input, records.join("\n") + "\n").unwrap();
    let (port, store) = http_server();
    let mut cmd = Command::new("dedup_buckets");
    cmd.arg("--checkpoint")
        .arg(tmp.path().join("state"))
        .arg("--input")
        .arg(&input)
        .arg("--http")
        .arg(format!("http://127.0.0.1:{port}/sink"))
        .args(["--batch-ms", "40", "--block-ms", "10"])
        .stdin(Stdio::null());
    let mut run = Running::spawn(&mut cmd, tmp.path().join("stderr"));
    run.finish();
    let mut output = BTreeMap::new();
    for (path, body) in store.lock().unwrap().iter() {
        let key = path
            .strip_prefix("/sink/batch/")
            .and_then(|s| s.split_once("/bucket/"))
            .and_then(|(t, k)| Some((t.parse().ok()?, k.parse().ok()?)))
            .unwrap_or_else(|| panic!("unexpected path {path}"));
        output.insert(key, lines_of(body));
    }
    check_buckets(&output, &records);
}

#[test]
fn dedup_buckets_rejects_bad_arguments_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        vec!["--checkpoint", "x"],
        vec!["--checkpoint", "x", "--http", "ftp://host/"],
        vec!["--checkpoint", "x", "--out", "y", "--batch-ms", "0"],
    ] {
        let mut spec = Command::new("dedup_buckets");
        spec.current_dir(tmp.path()).args(&args);
        let out = child_of(&spec).stdin(Stdio::null()).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("dedup_buckets: error: "), "{args:?}: {err}");
    }
}
