//! One owner per context: the lock a [`crate::recovery::StreamingContext`]
//! takes on its directory before it reads, creates or removes anything in
//! it, and the holder's pid and host name written into the lock file so a
//! refused opener can say who holds it.

use crate::error::{Error, LockHolder, Result};
use crate::storage::{DirLock, OpenMode, Storage};
use std::io;
use std::path::Path;

/// Name of the lock file in a context's directory (the same file
/// [`crate::storage::StdStorage`] locks for any directory).
pub const CONTEXT_LOCK_FILE_NAME: &str = "LOCK";

/// Most bytes of the lock file read back (it holds two short lines).
const HOLDER_BYTES_MAX: usize = 512;

/// Create `dir` if needed (durably), then take its lock. On success, the
/// lock file says who holds it (best effort: the lock is what counts).
///
/// # Errors
/// [`Error::Locked`] naming `dir` and, if it wrote them, the holder's pid
/// and host, when another opener holds the lock: nothing else in `dir`
/// was read, created or removed. [`Error::Io`] if the directory cannot be
/// created or locked.
pub(crate) fn lock_context(storage: &dyn Storage, dir: &Path) -> Result<Box<dyn DirLock>> {
    crate::storage::create_dir_durably(storage, dir)?;
    match storage.try_lock_dir(dir) {
        Ok(Some(guard)) => {
            // Informational only: a failure here leaves the lock held and
            // a refused opener without the holder's name.
            let _ = write_holder(storage, dir);
            Ok(guard)
        }
        Ok(None) => Err(Error::Locked {
            path: dir.to_path_buf(),
            holder: read_holder(storage, dir),
        }),
        Err(e) => Err(Error::io("lock", dir, e)),
    }
}

fn write_holder(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let path = dir.join(CONTEXT_LOCK_FILE_NAME);
    let file = match storage.open(&path, OpenMode::ReadWrite) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            storage.open(&path, OpenMode::CreateNew)?
        }
        other => other?,
    };
    let text = format!("pid={}\nhost={}\n", std::process::id(), host_name());
    file.set_len(0)?;
    file.write_at(text.as_bytes(), 0)
}

/// The holder the lock file names, if it reads as one.
fn read_holder(storage: &dyn Storage, dir: &Path) -> Option<LockHolder> {
    let file = storage
        .open(&dir.join(CONTEXT_LOCK_FILE_NAME), OpenMode::Read)
        .ok()?;
    let mut buf = [0u8; HOLDER_BYTES_MAX];
    let n = file.read_at(&mut buf, 0).ok()?;
    parse_holder(std::str::from_utf8(&buf[..n]).ok()?)
}

fn parse_holder(text: &str) -> Option<LockHolder> {
    let mut pid = None;
    let mut host = None;
    for line in text.lines() {
        if let Some(p) = line.strip_prefix("pid=") {
            pid = p.parse().ok();
        } else if let Some(h) = line.strip_prefix("host=") {
            host = Some(h.to_string());
        }
    }
    Some(LockHolder {
        pid: pid?,
        host: host.unwrap_or_default(),
    })
}

/// This machine's host name, from the kernel (Linux) or `HOSTNAME`; empty
/// if neither says.
fn host_name() -> String {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().take(255).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_text_round_trips_and_garbage_is_none() {
        assert_eq!(
            parse_holder("pid=42\nhost=box\n"),
            Some(LockHolder {
                pid: 42,
                host: "box".into()
            })
        );
        assert_eq!(parse_holder(""), None);
        assert_eq!(parse_holder("pid=x\n"), None);
    }
}
