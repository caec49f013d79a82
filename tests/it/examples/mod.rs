//! The examples do what the README says: `dedup_buckets` survives `kill -9` with every input record in its directory sink exactly once and the bucket rule holding, its HTTP sink delivers every bucket to a local server, `network_word_count` counts the words a local TCP source sends (and, tailing a file, loses nothing across a kill), and `pg_sink` writes each record of its file into PostgreSQL exactly once across a kill.
//!
//! Each example runs in a child process: this test binary compiles the
//! example files in as modules and re-executes itself to run one example's
//! `main` (so no example binary needs to be built first). Children are
//! synchronized by reading their output lines, never by sleeping.

mod dedup;
mod pg;
mod word_count;

use crate::common::rng::{Rng, seed_from_env};
use crate::common::test_name;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Longest a test waits for a line it expects from a child.
const PATIENCE: Duration = Duration::from_secs(60);

/// Child processes run an example's code in this test binary (the example
/// files are compiled in as modules): which example, and its arguments
/// separated by newlines.
const EXAMPLE_ENV: &str = "STREAMWAL_EXAMPLE_CHILD";
const ARGS_ENV: &str = "STREAMWAL_EXAMPLE_ARGS";

#[allow(dead_code)]
#[path = "../../../examples/dedup_buckets.rs"]
mod dedup_buckets;
#[allow(dead_code)]
#[path = "../../../examples/network_word_count.rs"]
mod network_word_count;
#[allow(dead_code)]
#[path = "../../../examples/pg_sink.rs"]
mod pg_sink;

/// The example's `main`, run only when a test re-executes this binary.
#[test]
#[ignore = "run by the other tests as a child process"]
fn example_child_main() {
    let Ok(name) = std::env::var(EXAMPLE_ENV) else {
        return;
    };
    let args = std::env::var(ARGS_ENV).unwrap_or_default();
    let argv = std::iter::once(name.clone())
        .chain(args.split('\n').filter(|a| !a.is_empty()).map(String::from))
        .map(std::ffi::OsString::from);
    let code = match name.as_str() {
        "dedup_buckets" => dedup_buckets::real_main(argv),
        "network_word_count" => network_word_count::real_main(argv),
        "pg_sink" => pg_sink::real_main(argv),
        other => panic!("no example {other}"),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(code));
}

/// `spec` names an example (its program) and its arguments; the command
/// that runs it in a child process, stdin piped.
fn child_of(spec: &Command) -> Command {
    let name = spec.get_program().to_str().unwrap().to_string();
    let args: Vec<&str> = spec.get_args().map(|a| a.to_str().unwrap()).collect();
    assert!(args.iter().all(|a| !a.contains('\n')), "{args:?}");
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        &test_name(module_path!(), "example_child_main"),
        "--ignored",
        "--nocapture",
        "-q",
    ])
    .args(["--test-threads", "1"])
    .env(EXAMPLE_ENV, name)
    .env(ARGS_ENV, args.join("\n"))
    .env_remove("RUST_BACKTRACE")
    .stdin(Stdio::piped());
    if let Some(dir) = spec.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd
}

/// A running child whose stdout lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
    /// Every line read so far.
    log: Vec<String>,
}

impl Running {
    fn spawn(spec: &mut Command, stderr: PathBuf) -> Running {
        let mut child = child_of(spec)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn the example");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            let mut preamble = true;
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.last() != Some(&b'\n') => break, // cut by a kill
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
                        // The test harness's own first lines.
                        if preamble && (line.is_empty() || line.starts_with("running ")) {
                            continue;
                        }
                        preamble = false;
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Running {
            child,
            lines,
            stderr,
            log: Vec::new(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next line, or `None` once the child's stdout is closed.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(l) => {
                self.log.push(l.clone());
                Some(l)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!(
                    "no output for {PATIENCE:?}; last lines: {:?}\nstderr: {}",
                    self.log.iter().rev().take(5).collect::<Vec<_>>(),
                    self.stderr()
                );
            }
        }
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child ended by itself ({status}): {}",
            self.stderr()
        );
    }

    /// Read every remaining line, then wait for a successful exit.
    fn finish(&mut self) {
        while self.next_line().is_some() {}
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "the example failed ({status}): {}\nlast lines: {:?}",
            self.stderr(),
            self.log.iter().rev().take(5).collect::<Vec<_>>()
        );
    }
}
