//! What the demo's parent and worker agree on: the records the source
//! produces, the bytes of a receiver block, and the sink's output files.
//!
//! Record `i` is a deterministic line of words, so the parent can recompute
//! every record from its id alone and check the sink's counts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The words records are made of (the seed's "to be or not to be").
const VOCABULARY: [&str; 12] = [
    "to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "mind",
];

/// The batch interval of the demo's engine (ms): one-second batches.
pub const INTERVAL_MS: u64 = 1_000;

/// The words of record `id`: 2 to 7 words from [`VOCABULARY`].
pub fn record_words(id: u64) -> Vec<&'static str> {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    let n = 2 + (id % 6) as usize;
    (0..n)
        .map(|_| {
            x ^= x >> 29;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 32;
            VOCABULARY[(x % VOCABULARY.len() as u64) as usize]
        })
        .collect()
}

/// The line the source sends for record `id` (without the newline):
/// `ID word word ...`. A receiver block is such lines, each ending in `\n`.
pub fn record_line(id: u64) -> String {
    format!("{id} {}", record_words(id).join(" "))
}

/// One record parsed back from a block: its id and its text.
pub fn parse_record(line: &str) -> Option<(u64, &str)> {
    let (id, text) = line.split_once(' ')?;
    Some((id.parse().ok()?, text))
}

/// The output of one batch: the ids of the records it counted and the word
/// counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutput {
    /// The batch's time (ms).
    pub batch_time: u64,
    /// Ids of the records the batch counted, in block order.
    pub ids: Vec<u64>,
    /// Word -> occurrences in the batch's records.
    pub counts: BTreeMap<String, u64>,
}

impl BatchOutput {
    /// Count the words of `records` (id, text) for the batch at `batch_time`.
    pub fn count<'a>(batch_time: u64, records: impl IntoIterator<Item = (u64, &'a str)>) -> Self {
        let mut out = BatchOutput {
            batch_time,
            ..BatchOutput::default()
        };
        for (id, text) in records {
            out.ids.push(id);
            for word in text.split_whitespace() {
                *out.counts.entry(word.to_string()).or_default() += 1;
            }
        }
        out
    }

    /// The file's text: `batch T`, `records N RANGES` (`-` if none), then one
    /// `word count` line per word, sorted.
    pub fn render(&self) -> String {
        let mut s = format!(
            "batch {}\nrecords {} {}\n",
            self.batch_time,
            self.ids.len(),
            ranges(&self.ids)
        );
        for (w, c) in &self.counts {
            s.push_str(&format!("{w} {c}\n"));
        }
        s
    }

    /// Parse a file written by [`BatchOutput::render`].
    pub fn parse(text: &str) -> Result<BatchOutput, String> {
        let mut lines = text.lines();
        let batch_time = lines
            .next()
            .and_then(|l| l.strip_prefix("batch "))
            .and_then(|t| t.parse().ok())
            .ok_or("no `batch T` line")?;
        let rec = lines
            .next()
            .and_then(|l| l.strip_prefix("records "))
            .ok_or("no `records` line")?;
        let (n, list) = rec.split_once(' ').ok_or("bad `records` line")?;
        let n: usize = n.parse().map_err(|_| "bad record count")?;
        let ids = parse_ranges(list)?;
        if ids.len() != n {
            return Err(format!("says {n} records, lists {}", ids.len()));
        }
        let mut counts = BTreeMap::new();
        for l in lines {
            let (w, c) = l.split_once(' ').ok_or("bad `word count` line")?;
            let c: u64 = c.parse().map_err(|_| "bad word count")?;
            counts.insert(w.to_string(), c);
        }
        Ok(BatchOutput {
            batch_time,
            ids,
            counts,
        })
    }

    /// Write the output file of this batch into `out` atomically and
    /// idempotently: temp file, fsync, rename over `batch-T.txt`, fsync the
    /// directory. Rerunning a batch writes the same bytes again.
    pub fn write_atomically(&self, out: &Path) -> std::io::Result<()> {
        let tmp = out.join(format!("batch-{}.tmp", self.batch_time));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.render().as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, output_path(out, self.batch_time))?;
        std::fs::File::open(out)?.sync_all()
    }
}

/// The sink's file for the batch at `batch_time`.
pub fn output_path(out: &Path, batch_time: u64) -> PathBuf {
    out.join(format!("batch-{batch_time}.txt"))
}

/// `ids` as `a-b,c,d-e` (runs of consecutive ids), or `-` if empty.
pub fn ranges(ids: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let mut j = i;
        while j + 1 < ids.len() && ids[j + 1] == ids[j].wrapping_add(1) {
            j += 1;
        }
        parts.push(if i == j {
            ids[i].to_string()
        } else {
            format!("{}-{}", ids[i], ids[j])
        });
        i = j + 1;
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(",")
    }
}

/// Parse [`ranges`]'s output.
pub fn parse_ranges(s: &str) -> Result<Vec<u64>, String> {
    if s == "-" {
        return Ok(Vec::new());
    }
    let mut ids = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u64 = a.parse().map_err(|_| format!("bad id range {part:?}"))?;
        let b: u64 = b.parse().map_err(|_| format!("bad id range {part:?}"))?;
        if b < a || b - a > 100_000_000 {
            return Err(format!("bad id range {part:?}"));
        }
        ids.extend(a..=b);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_round_trips() {
        let recs: Vec<(u64, String)> = [3, 4, 5, 9, 11, 12]
            .iter()
            .map(|&i| (i, record_words(i).join(" ")))
            .collect();
        let out = BatchOutput::count(7_000, recs.iter().map(|(i, t)| (*i, t.as_str())));
        assert_eq!(ranges(&out.ids), "3-5,9,11-12");
        assert_eq!(BatchOutput::parse(&out.render()), Ok(out));
        let empty = BatchOutput::count(8_000, []);
        assert_eq!(BatchOutput::parse(&empty.render()), Ok(empty));
    }

    #[test]
    fn records_parse_back() {
        let line = record_line(42);
        let (id, text) = parse_record(&line).unwrap();
        assert_eq!(id, 42);
        assert_eq!(text.split(' ').collect::<Vec<_>>(), record_words(42));
    }
}
