//! The `network_word_count` example, run as a real process.

use super::*;

/// One printed batch: its time, its byte range (file mode) and its counts.
#[derive(Debug, Default)]
struct WordBatch {
    time: u64,
    range: Option<(u64, u64)>,
    counts: BTreeMap<String, u64>,
}

/// Parse the example's batches (`Time: T ms[ (bytes A..B)]`, then `(w,c)`).
fn word_batches(log: &[String]) -> Vec<WordBatch> {
    let mut out: Vec<WordBatch> = Vec::new();
    for line in log {
        if let Some(rest) = line.strip_prefix("Time: ") {
            let range = rest
                .split_once("(bytes ")
                .and_then(|(_, r)| r.strip_suffix(')'))
                .and_then(|r| r.split_once(".."))
                .map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap()));
            let time = rest.split(' ').next().unwrap().parse().unwrap();
            out.push(WordBatch {
                time,
                range,
                counts: BTreeMap::new(),
            });
        } else if let Some(pair) = line.strip_prefix('(').and_then(|l| l.strip_suffix(')'))
            && let Some((w, c)) = pair.rsplit_once(',')
        {
            let batch = out.last_mut().expect("a count before any batch");
            *batch.counts.entry(w.to_string()).or_default() += c.parse::<u64>().unwrap();
        }
    }
    out
}

fn add_counts<'a>(batches: impl IntoIterator<Item = &'a WordBatch>) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for b in batches {
        for (w, c) in &b.counts {
            *total.entry(w.clone()).or_default() += c;
        }
    }
    total
}

fn count_text(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for w in text.split_whitespace() {
        *counts.entry(w.to_string()).or_default() += 1;
    }
    counts
}

/// Lines of words, some repeated across lines.
fn word_lines(n: usize, salt: usize) -> String {
    let words = ["to", "be", "or", "not", "that", "is", "the", "question"];
    let mut s = String::new();
    for i in 0..n {
        let len = 1 + (i * 7 + salt) % 6;
        let line: Vec<&str> = (0..len)
            .map(|j| words[(i * 31 + j * 17 + salt) % words.len()])
            .collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    s
}

/// The word count against a TCP source the test serves: every word the
/// source sent is counted once across the printed batches.
fn word_count_over_tcp(checkpoint: Option<&Path>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = tx.send(conn);
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("network_word_count");
    cmd.arg(addr.to_string())
        .args(["--batch-ms", "100", "--block-ms", "20"])
        .stdin(Stdio::null());
    if let Some(dir) = checkpoint {
        cmd.arg("--checkpoint").arg(dir);
    }
    let mut run = Running::spawn(&mut cmd, tmp.path().join("stderr"));
    let mut conn = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the example never connected: {}", run.stderr()));
    let text = word_lines(300, 1);
    // Two halves, the second once the first is counted, so both land in
    // more than one batch.
    let cut = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    let a = &text[..cut];
    conn.write_all(a.as_bytes()).unwrap();
    let want_a = count_text(a);
    while add_counts(&word_batches(&run.log)) != want_a {
        run.next_line().expect("the example ended early");
    }
    conn.write_all(&text.as_bytes()[cut..]).unwrap();
    drop(conn); // the source closes: the example counts the rest and exits
    run.finish();
    let batches = word_batches(&run.log);
    assert_eq!(add_counts(&batches), count_text(&text));
    assert!(batches.len() >= 2, "{batches:?}");
}

#[test]
fn network_word_count_counts_a_tcp_source() {
    word_count_over_tcp(None);
}

#[test]
fn network_word_count_counts_a_tcp_source_through_the_wal() {
    let tmp = tempfile::tempdir().unwrap();
    word_count_over_tcp(Some(&tmp.path().join("ckpt")));
    // The state directory holds a checkpoint, the journal and the log.
    assert!(tmp.path().join("ckpt/journal").is_dir());
    assert!(tmp.path().join("ckpt/receiver").is_dir());
}

#[test]
fn network_word_count_file_source_loses_nothing_across_kill_nine() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let (file, ckpt) = (tmp.path().join("words.txt"), tmp.path().join("ckpt"));
    let parts = [word_lines(200, 2), word_lines(150, 3), word_lines(100, 5)];
    std::fs::write(&file, &parts[0]).unwrap();
    let cmd = |follow: bool| {
        let mut c = Command::new("network_word_count");
        c.arg("--file")
            .arg(&file)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--batch-ms", "40"])
            .stdin(Stdio::null());
        if !follow {
            c.arg("--no-follow");
        }
        c
    };

    // Run 1 tails the file; the second part is appended once the first is
    // checkpointed; the kill lands right after a batch is printed (before
    // its checkpoint) or right after a checkpoint.
    let mut run = Running::spawn(&mut cmd(true), tmp.path().join("stderr-1"));
    let first_end = parts[0].len() as u64;
    let mut appended = false;
    let kill_on_print = rng.below(2) == 0;
    loop {
        let line = run.next_line().expect("the example ended early");
        if !appended
            && line
                .strip_prefix("checkpointed ")
                .is_some_and(|l| l.ends_with(&format!("at byte {first_end}")))
        {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .unwrap();
            f.write_all(parts[1].as_bytes()).unwrap();
            appended = true;
        } else if appended {
            let batches = word_batches(&run.log);
            let last_end = batches.last().and_then(|b| b.range).map_or(0, |r| r.1);
            let hit = if kill_on_print {
                line.starts_with("Time: ") && last_end > first_end
            } else {
                line.starts_with("checkpointed ") && last_end > first_end
            };
            if hit || last_end == (parts[0].len() + parts[1].len()) as u64 {
                break;
            }
        }
    }
    run.kill9();
    while run.next_line().is_some() {} // what it printed before dying
    let run1 = word_batches(&run.log);

    // More input while it is down, then run 2 reads to the end of the file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    f.write_all(parts[2].as_bytes()).unwrap();
    drop(f);
    let mut run2 = Running::spawn(&mut cmd(false), tmp.path().join("stderr-2"));
    let first = run2.next_line().expect("a first line");
    let resume: u64 = first
        .rsplit_once(" from byte ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    run2.finish();
    // The running counts in keyed state hold every word of the file once,
    // across the kill.
    let running = run2
        .log
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("running: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a running total");
    let run2 = word_batches(&run2.log);

    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        resume > 0 && resume <= text.len() as u64,
        "resume at {resume}"
    );
    // Run 1's batches up to the checkpointed offset cover [0, resume)
    // exactly; run 2 covers the rest: nothing lost, nothing counted twice.
    let done: Vec<&WordBatch> = run1
        .iter()
        .filter(|b| b.range.is_some_and(|r| r.1 <= resume))
        .collect();
    let mut at = 0;
    for b in &done {
        let (start, end) = b.range.unwrap();
        assert_eq!(start, at, "run 1's batches are not contiguous: {run1:?}");
        at = end;
    }
    assert_eq!(
        at, resume,
        "run 1's checkpointed batches end at {at}, not {resume}"
    );
    assert_eq!(
        add_counts(done.iter().copied()),
        count_text(&text[..resume as usize])
    );
    assert_eq!(
        run2.first().and_then(|b| b.range).map(|r| r.0),
        Some(resume)
    );
    assert_eq!(add_counts(&run2), count_text(&text[resume as usize..]));
    assert_eq!(running, text.split_whitespace().count() as u64);
}

#[test]
fn network_word_count_wal_recovers_acknowledged_lines_after_kill_nine() {
    let seed = seed_from_env("STREAMWAL_EXAMPLES_SEED");
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let cmd = |addr: String| {
        let mut c = Command::new("network_word_count");
        c.arg(addr)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--ack", "--batch-ms", "60", "--block-ms", "15"])
            .stdin(Stdio::null());
        c
    };
    let serve = || {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((conn, _)) = listener.accept() {
                let _ = tx.send(conn);
            }
        });
        (addr, rx)
    };
    const LINES: u64 = 400;
    let text = word_lines(LINES as usize, 7);
    let lines: Vec<&str> = text.lines().collect();

    // Run 1: the source sends every line and reads the acknowledgements;
    // the example is killed once a random number of lines is acknowledged.
    let (addr, conn) = serve();
    let mut run = Running::spawn(&mut cmd(addr), tmp.path().join("stderr-1"));
    let conn = conn
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the example never connected: {}", run.stderr()));
    // A paced source: 10 lines, then wait for their acknowledgement.
    let mut writer = conn.try_clone().unwrap();
    let mut acks = BufReader::new(conn);
    let target = 10 * (1 + rng.below(LINES / 10 - 1));
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut line = String::new();
    let mut read_ack = |acks: &mut BufReader<TcpStream>| -> Option<u64> {
        line.clear();
        match acks.read_line(&mut line) {
            Ok(n) if n > 0 && line.ends_with('\n') => {
                Some(line.trim().strip_prefix("ack ").unwrap().parse().unwrap())
            }
            _ => None,
        }
    };
    while sent < LINES {
        let chunk: String = lines[sent as usize..sent as usize + 10]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        writer.write_all(chunk.as_bytes()).unwrap();
        sent += 10;
        if acked >= target {
            break; // this chunk is in flight when the kill comes
        }
        while acked < sent {
            acked = read_ack(&mut acks).unwrap_or_else(|| panic!("no ack: {}", run.stderr()));
        }
    }
    run.kill9();
    // Acknowledgements sent before the kill count too.
    while let Some(n) = read_ack(&mut acks) {
        acked = n;
    }
    drop(writer);
    while run.next_line().is_some() {}
    let run1 = word_batches(&run.log);

    // Run 2: recovers, reruns the batches it owed, then meets a source that
    // closes at once, and exits.
    let (addr, conn) = serve();
    let mut run2 = Running::spawn(&mut cmd(addr), tmp.path().join("stderr-2"));
    let conn = conn.recv_timeout(PATIENCE);
    assert!(conn.is_ok(), "run 2 never connected: {}", run2.stderr());
    drop(conn);
    run2.finish();
    let recovered = run2
        .log
        .iter()
        .filter(|l| l.ends_with("(recovered)"))
        .count();
    let run2 = word_batches(&run2.log);

    // A rerun batch is the same batch: run 1 printed it, maybe cut short by
    // the kill, with no count above the rerun's.
    let mut by_time: BTreeMap<u64, &WordBatch> = run1.iter().map(|b| (b.time, b)).collect();
    for b in &run2 {
        if let Some(before) = by_time.get(&b.time) {
            for (w, c) in &before.counts {
                assert!(
                    b.counts.get(w).is_some_and(|c2| c2 >= c),
                    "batch {} changed",
                    b.time
                );
            }
        }
        by_time.insert(b.time, b);
    }
    // Counted once per batch time: exactly the first S lines the source
    // sent, for some S covering every acknowledged line.
    let total = add_counts(by_time.values().copied());
    let stored = (acked..=LINES).find(|&s| {
        let prefix: String = lines[..s as usize]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        count_text(&prefix) == total
    });
    assert!(
        stored.is_some(),
        "the counts are not those of a prefix of at least the {acked} acknowledged lines \
         (seed {seed}); {recovered} batches recovered"
    );
    println!("{acked} lines acknowledged, {stored:?} stored, {recovered} batches recovered");
}
