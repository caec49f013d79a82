//! Exclusive locking, in this process and from another process.

use super::*;

// ---------------------------------------------------------------- locking

#[test]
fn second_open_in_this_process_is_locked_until_the_first_is_dropped() {
    let _no_spawns = no_spawns();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let first = Wal::open(&dir, WalOptions::default()).unwrap();
    first.append(b"one").unwrap();

    match Wal::open(&dir, WalOptions::default()) {
        Err(Error::Locked { path, .. }) => assert_eq!(path, dir),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    // A read-only salvage open is excluded too.
    let salvage = WalOptions {
        recovery_mode: RecoveryMode::Salvage,
        ..WalOptions::default()
    };
    assert!(matches!(
        Wal::open(&dir, salvage),
        Err(Error::Locked { .. })
    ));
    // The failed opens did not disturb the holder.
    first.append(b"two").unwrap();
    drop(first);

    let second = Wal::open(&dir, WalOptions::default()).unwrap();
    let got: Vec<Vec<u8>> = all_records(&second).into_iter().map(|r| r.1).collect();
    assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
    second.append(b"three").unwrap();
}

const HOLDER_ENV: &str = "STREAMWAL_LIFECYCLE_HOLD_LOCK_DIR";
const HOLDER_TEST: &str = "lock_held_by_another_wal_process_excludes_open";
const HELD: &str = "streamwal-lifecycle-lock-held";

/// A child process holding the directory's lock until its stdin closes.
struct Holder {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn spawn(mut cmd: Command) -> Holder {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn lock holder");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Holder { child, stdout }
    }

    /// Block until the child says it holds the lock.
    fn wait_until_held(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            if n == 0 {
                let status = self.child.wait().unwrap();
                panic!("lock holder exited ({status}) before taking the lock");
            }
            if line.contains(HELD) {
                return;
            }
        }
    }

    /// Close its stdin, drain its output, and check it exited cleanly.
    fn release(mut self) {
        drop(self.child.stdin.take());
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "lock holder failed: {status}; {rest}");
    }
}

/// util-linux `flock` on `DIR/LOCK`, if the tool exists.
fn flock_holder(dir: &Path) -> Option<Holder> {
    let available = Command::new("flock")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        return None;
    }
    let mut cmd = Command::new("flock");
    cmd.arg("-n")
        .arg("-x")
        .arg(dir.join("LOCK"))
        .arg("-c")
        .arg(format!("echo {HELD}; read x; exit 0"));
    Some(Holder::spawn(cmd))
}

/// This test binary, re-run so that [`HOLDER_TEST`] opens the log and waits.
fn wal_holder(dir: &Path) -> Holder {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        &test_name(module_path!(), HOLDER_TEST),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HOLDER_ENV, dir);
    Holder::spawn(cmd)
}

/// The child side of [`HOLDER_TEST`]: open, say so, wait for stdin to close.
fn hold_lock_as_child(dir: &Path) {
    let wal = Wal::open(dir, WalOptions::default()).expect("child: open");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{HELD}").unwrap();
    out.flush().unwrap();
    drop(out);
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink).unwrap();
    drop(wal);
}

/// `Wal::open`, turned into a failure if it blocks instead of failing at once.
fn open_or_fail_fast(dir: &Path, opts: WalOptions) -> streamwal::Result<Wal> {
    let (tx, rx) = mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Wal::open(&dir, opts));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("Wal::open blocked on a held lock instead of failing at once")
}

fn cross_process_lock(spawn: impl Fn(&Path) -> Holder) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = Wal::open(&dir, WalOptions::default()).unwrap();
        wal.append(b"written before the other process").unwrap();
    }
    let mut holder = spawn(&dir);
    holder.wait_until_held();
    for _ in 0..2 {
        match open_or_fail_fast(&dir, WalOptions::default()) {
            Err(Error::Locked { path, .. }) => assert_eq!(path, dir),
            other => panic!("expected Error::Locked while another process holds it, got {other:?}"),
        }
    }
    holder.release();

    let wal = Wal::open(&dir, WalOptions::default()).expect("open after the holder exited");
    let got: Vec<Vec<u8>> = all_records(&wal).into_iter().map(|r| r.1).collect();
    assert_eq!(got, vec![b"written before the other process".to_vec()]);
    assert_eq!(wal.append(b"after").unwrap().lsn(), 2);
}

#[test]
fn lock_held_by_another_wal_process_excludes_open() {
    if let Some(dir) = std::env::var_os(HOLDER_ENV) {
        hold_lock_as_child(Path::new(&dir));
        return;
    }
    let _spawning = spawning();
    cross_process_lock(wal_holder);
}

#[test]
fn lock_held_by_flock_process_excludes_open() {
    let _spawning = spawning();
    cross_process_lock(|dir| flock_holder(dir).unwrap_or_else(|| wal_holder(dir)));
}

/// Dropping a `Wal` releases its directory lock at once, even while a child
/// process forked by another thread still holds a copy of the descriptor
/// (before it execs): an immediate reopen is never `Error::Locked`.
#[test]
fn reopen_is_not_locked_while_another_thread_spawns_processes() {
    let _spawning = spawning();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let stop = Arc::new(AtomicBool::new(false));
    let spawner = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                Command::new("true").status().expect("run `true`");
            }
        })
    };
    let mut locked = 0;
    for _ in 0..300 {
        for _ in 0..2 {
            match Wal::open(&dir, mid(true)) {
                Ok(wal) => drop(wal),
                Err(Error::Locked { .. }) => locked += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    assert_eq!(
        locked, 0,
        "opens refused right after the only holder was dropped"
    );
}
