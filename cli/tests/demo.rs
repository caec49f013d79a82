//! `streamwal demo` end to end: the real binary kills its worker with SIGKILL three times, recovers each time, and its exactly-once check and its running-counts check (keyed state) pass.

use std::process::Command;

#[test]
fn demo_survives_three_kills_with_exactly_once_output() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_streamwal"))
        .args(["demo", "--kills", "3", "--seconds", "5", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "exit {}\n{context}", out.status);
    let row = |label: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no `{label}` row\n{context}"))
            .trim()
            .to_string()
    };
    assert_eq!(row("verdict"), "PASS", "{context}");
    assert!(row("kills ").starts_with("3 "), "{context}");
    assert_eq!(
        row("lost / duplicated / invented"),
        "0 / 0 / 0",
        "{context}"
    );
    // The running counts in keyed state, read back by a recovered context,
    // hold every counted record's words exactly once.
    assert!(row("running counts").starts_with("PASS"), "{context}");
    // The transactional sink, driven through streamwal::sink::ExactlyOnce.
    assert!(row("exactly once").starts_with("PASS"), "{context}");
    let acked: u64 = row("records acknowledged").parse().unwrap();
    assert!(acked > 0, "{context}");
    // Every batch's output is a file in the sink.
    assert!(dir.join("out").read_dir().unwrap().next().is_some());
}

#[test]
fn demo_refuses_a_directory_that_is_not_empty() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("precious.txt"), "keep me").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamwal"))
        .args(["demo", "--kills", "1", "--seconds", "1", "--dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(tmp.path().join("precious.txt").exists());
}
