//! The `pg_sink` example, run as a real process against PostgreSQL: killed
//! with SIGKILL after a few batches and run again, every record of its input
//! file has exactly one row.

use super::*;
use crate::pg::server;

#[test]
fn pg_sink_example_writes_each_record_once_across_a_kill() {
    let Some(pg) = server("pg_sink_example") else {
        return;
    };
    let mut rng = Rng::new(seed_from_env("STREAMWAL_EXAMPLE_SEED"));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("ids.txt");
    let ids: String = (0..3_000).map(|i| format!("{i}\n")).collect();
    std::fs::write(&input, ids).unwrap();
    let query = format!("example{}_{}", std::process::id(), rng.below(1 << 30));
    let mut spec = Command::new("pg_sink");
    spec.arg("--url")
        .arg(&pg.url)
        .arg("--dir")
        .arg(tmp.path().join("ctx"))
        .arg("--input")
        .arg(&input)
        .args(["--query", &query, "--batch-lines", "97"]);
    let mut first = Running::spawn(&mut spec, tmp.path().join("stderr-1"));
    let kill_after = 1 + rng.below(20);
    let mut batches = 0;
    while batches < kill_after {
        let line = first.next_line().expect("the example ended early");
        batches += u64::from(line.starts_with("batch "));
    }
    first.kill9();
    let mut second = Running::spawn(&mut spec, tmp.path().join("stderr-2"));
    second.finish();
    assert_eq!(second.log.last().map(String::as_str), Some("done"));
    let mut client = postgres::Client::connect(&pg.url, postgres::NoTls).unwrap();
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT id), max(n) FROM pg_sink_out WHERE query = $1",
            &[&query],
        )
        .unwrap();
    let (rows, distinct, max): (i64, i64, Option<i64>) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(
        (rows, distinct, max),
        (3_000, 3_000, Some(1)),
        "{:?}",
        second.log
    );
}
