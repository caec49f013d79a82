//! The demo's second sink, transactional (`streamwal::sink`): a directory
//! standing in for a database. A batch's output file is pre-committed into
//! `prepared/` (temp file, fsync, rename, fsync the directory) and committed
//! by renaming it into `committed/` (fsync both directories), so that a
//! crash at any point leaves it pending or committed, never half-written.
//! The worker drives it through `ExactlyOnce`; the verdict checks
//! `committed/` against the acknowledged records and that nothing is left
//! in `prepared/`.

use super::data::output_path;
use std::io::Write;
use std::path::{Path, PathBuf};
use streamwal::sink::{SinkError, TransactionalSink};

/// The sink's directories below the demo directory.
pub fn layout(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("txn-sink");
    (root.join("prepared"), root.join("committed"))
}

/// A transactional sink of whole batch files.
#[derive(Debug)]
pub struct FileTxnSink {
    prepared: PathBuf,
    committed: PathBuf,
    /// The open transaction: the batch and its file's text.
    open: Option<(u64, String)>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FileTxnSink {
    /// The sink in `dir`, its directories created if missing.
    pub fn open(dir: &Path) -> std::io::Result<FileTxnSink> {
        let (prepared, committed) = layout(dir);
        std::fs::create_dir_all(&prepared)?;
        std::fs::create_dir_all(&committed)?;
        sync_dir(&prepared)?;
        sync_dir(&committed)?;
        Ok(FileTxnSink {
            prepared,
            committed,
            open: None,
        })
    }

    /// Begin batch `t`'s transaction, holding `text`.
    pub fn begin(&mut self, t: u64, text: String) {
        self.open = Some((t, text));
    }
}

impl TransactionalSink for FileTxnSink {
    fn pre_commit(&mut self, batch_time: u64) -> Result<Vec<u8>, SinkError> {
        let text = match self.open.take() {
            Some((t, text)) if t == batch_time => text,
            _ => return Err(format!("batch {batch_time} is not begun").into()),
        };
        let tmp = self.prepared.join(format!("batch-{batch_time}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, output_path(&self.prepared, batch_time))?;
        sync_dir(&self.prepared)?;
        Ok(format!("batch-{batch_time}").into_bytes())
    }

    fn commit(&mut self, batch_time: u64, _txn: &[u8]) -> Result<(), SinkError> {
        let from = output_path(&self.prepared, batch_time);
        let to = output_path(&self.committed, batch_time);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => {}
            Err(e) => return Err(format!("cannot commit {}: {e}", from.display()).into()),
        }
        sync_dir(&self.committed)?;
        sync_dir(&self.prepared)?;
        Ok(())
    }

    fn abort(&mut self, batch_time: u64, txn: Option<&[u8]>) -> Result<(), SinkError> {
        self.open = None;
        if txn.is_some() {
            match std::fs::remove_file(output_path(&self.prepared, batch_time)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => sync_dir(&self.prepared)?,
            }
        }
        Ok(())
    }

    fn in_doubt(&mut self) -> Result<Vec<(u64, Vec<u8>)>, SinkError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.prepared)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(t) = name
                .strip_prefix("batch-")
                .and_then(|r| r.strip_suffix(".txt"))
                .and_then(|t| t.parse::<u64>().ok())
            {
                out.push((t, format!("batch-{t}").into_bytes()));
            }
        }
        Ok(out)
    }
}

/// Files left in `prepared/` (none once every batch is resolved).
pub fn left_prepared(dir: &Path) -> std::io::Result<usize> {
    let (prepared, _) = layout(dir);
    Ok(std::fs::read_dir(prepared)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".txt"))
        .count())
}
