//! A PostgreSQL server for the exactly-once sink tests: the one named by
//! `STREAMWAL_PG_URL` (`.ci/run` starts one with `.ci/pg-server` and sets
//! it, with `STREAMWAL_REQUIRE_PG=1`), or else a throwaway cluster this
//! test starts with the same script and stops when done. Only when neither
//! works (the script is told not to install PostgreSQL; `.ci/run` lets it)
//! is the test skipped, saying why and how to run it; with
//! `STREAMWAL_REQUIRE_PG` set that is a failure instead.

pub mod sink;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A server to connect to; stops the cluster on drop if it started one.
pub struct PgServer {
    /// A libpq-style connection string.
    pub url: String,
    started: Option<PathBuf>,
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Some(dirfile) = &self.started {
            let _ = Command::new(script()).arg("--stop").arg(dirfile).status();
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/pg-server")
}

/// The server for `test`, or `None` (with the reason printed) if none can
/// be had.
///
/// # Panics
/// If `STREAMWAL_REQUIRE_PG` is set and no server can be had.
pub fn server(test: &str) -> Option<PgServer> {
    if let Ok(url) = std::env::var("STREAMWAL_PG_URL") {
        return Some(PgServer { url, started: None });
    }
    let dirfile =
        std::env::temp_dir().join(format!("streamwal-pg-{test}-{}.dir", std::process::id()));
    let out = Command::new(script())
        .arg("--no-install")
        .arg(&dirfile)
        .output();
    let why = match out {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let url = text.lines().find_map(|l| {
                l.strip_prefix("export STREAMWAL_PG_URL='")
                    .and_then(|rest| rest.strip_suffix('\''))
            });
            match url {
                Some(url) => {
                    return Some(PgServer {
                        url: url.to_string(),
                        started: Some(dirfile),
                    });
                }
                None => format!(".ci/pg-server printed no STREAMWAL_PG_URL: {text}"),
            }
        }
        Ok(out) => {
            let _ = Command::new(script()).arg("--stop").arg(&dirfile).status();
            format!(
                ".ci/pg-server failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim_end()
            )
        }
        Err(e) => format!("cannot run .ci/pg-server: {e}"),
    };
    assert!(
        std::env::var_os("STREAMWAL_REQUIRE_PG").is_none(),
        "{test}: STREAMWAL_REQUIRE_PG is set but no PostgreSQL server: {why}"
    );
    // Straight to the descriptor, past libtest's capture: a skip is never
    // silent, even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "{test}: SKIPPED, no PostgreSQL server ({why}). To run it, install PostgreSQL \
         (initdb, pg_ctl, postgres) so that .ci/pg-server can start a throwaway cluster, \
         or point STREAMWAL_PG_URL at a server with max_prepared_transactions > 0: \
         eval \"$(.ci/pg-server target/pg.dir)\"; cargo test --all-features --test it -- pg_"
    );
    None
}
