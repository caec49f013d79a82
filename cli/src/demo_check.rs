//! The demo's verdict: the sink's output files checked against the source.
//!
//! Every acknowledged record must be counted exactly once across all batch
//! files; a record sent but never acknowledged (the worker died before its
//! `ack` reached the parent) may be counted once or not at all; nothing the
//! source never sent may appear; and each file's word counts must be exactly
//! the counts of the records it lists.

use super::data::{BatchOutput, record_words};
use std::collections::BTreeMap;
use std::path::Path;

/// What the check found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Batch output files read.
    pub files: u64,
    /// Acknowledged records counted exactly once.
    pub acked_once: u64,
    /// Records sent but never acknowledged that were counted (once).
    pub unacked_counted: u64,
    /// Words counted across all files.
    pub words: u64,
    /// Each word's occurrences in the records counted (each record once):
    /// what the running counts must hold.
    pub expected_counts: BTreeMap<String, u64>,
    /// Acknowledged records never counted.
    pub lost: u64,
    /// Records counted more than once.
    pub duplicated: u64,
    /// Records counted that the source never sent.
    pub invented: u64,
    /// Files whose word counts are not those of the records they list.
    pub miscounted: u64,
    /// The running counts' check: the words they hold, or what is wrong
    /// (`None`: not checked).
    pub running_counts: Option<Result<u64, String>>,
    /// The transactional sink's check: a summary, or what is wrong (`None`:
    /// not checked).
    pub exactly_once: Option<Result<String, String>>,
    /// Everything wrong, one line each (at most a few of each kind).
    pub problems: Vec<String>,
}

impl Verdict {
    /// True if nothing is wrong.
    pub fn pass(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// Check the batch files in `out` against the records `0..sent`, of which
/// those with `acked[id]` were acknowledged.
pub fn verify(out: &Path, sent: u64, acked: &[bool]) -> Verdict {
    let mut v = Verdict::default();
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) => {
            v.problem(format!("cannot list {}: {e}", out.display()));
            return v;
        }
    };
    // How many times each sent record was counted.
    let mut times = vec![0u32; usize::try_from(sent).unwrap_or(usize::MAX)];
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                v.problem(format!("cannot list {}: {e}", out.display()));
                continue;
            }
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(time) = name
            .strip_prefix("batch-")
            .and_then(|n| n.strip_suffix(".txt"))
        else {
            continue; // a temp file left by a killed worker: not output
        };
        let text = match std::fs::read_to_string(entry.path()) {
            Ok(t) => t,
            Err(e) => {
                v.problem(format!("cannot read {name}: {e}"));
                continue;
            }
        };
        let batch = match BatchOutput::parse(&text) {
            Ok(b) => b,
            Err(e) => {
                v.problem(format!("{name} is damaged: {e}"));
                continue;
            }
        };
        v.files += 1;
        if time != batch.batch_time.to_string() {
            v.problem(format!("{name} holds batch {}", batch.batch_time));
        }
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        for &id in &batch.ids {
            match times.get_mut(usize::try_from(id).unwrap_or(usize::MAX)) {
                Some(n) => *n += 1,
                None => {
                    v.invented += 1;
                    v.problem(format!("{name} counts record {id}, never sent (invented)"));
                }
            }
            for w in record_words(id) {
                *expected.entry(w.to_string()).or_default() += 1;
            }
        }
        if expected != batch.counts {
            v.miscounted += 1;
            v.problem(format!(
                "{name}: the word counts are not those of the records it lists"
            ));
        }
        v.words += batch.counts.values().sum::<u64>();
    }
    for (id, &n) in times.iter().enumerate() {
        if n > 0 {
            for w in record_words(id as u64) {
                *v.expected_counts.entry(w.to_string()).or_default() += 1;
            }
        }
        let was_acked = acked.get(id).copied().unwrap_or(false);
        match (was_acked, n) {
            (true, 1) => v.acked_once += 1,
            (true, 0) => {
                v.lost += 1;
                v.problem(format!("acknowledged record {id} was never counted (lost)"));
            }
            (false, 0) => {}
            (false, 1) => v.unacked_counted += 1,
            (_, n) => {
                v.duplicated += 1;
                v.problem(format!("record {id} was counted {n} times"));
            }
        }
    }
    // Acknowledgements the source cannot account for, or none at all, mean
    // the check proved nothing.
    if acked.len() as u64 > sent
        && acked[usize::try_from(sent).unwrap_or(usize::MAX)..].contains(&true)
    {
        v.problem("a record the source never sent was acknowledged".into());
    }
    if v.acked_once == 0 {
        v.problem("no record was acknowledged and counted: the run proved nothing".into());
    }
    v
}

/// Compare the running counts a recovered engine holds with the words of
/// every record counted exactly once; `None` if they agree, else what is
/// wrong.
pub fn check_running_counts(
    running: &BTreeMap<String, u64>,
    expected: &BTreeMap<String, u64>,
) -> Option<String> {
    let words: std::collections::BTreeSet<&String> =
        expected.keys().chain(running.keys()).collect();
    let wrong: Vec<&String> = words
        .into_iter()
        .filter(|w| running.get(*w) != expected.get(*w))
        .collect();
    let first = wrong.first()?;
    Some(format!(
        "the running counts differ for {} words (first: {first:?} holds {:?}; \
         the records counted say {:?})",
        wrong.len(),
        running.get(*first),
        expected.get(*first)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(out: &Path, t: u64, ids: &[u64]) {
        let words: Vec<(u64, String)> = ids
            .iter()
            .map(|&i| (i, record_words(i).join(" ")))
            .collect();
        BatchOutput::count(t, words.iter().map(|(i, w)| (*i, w.as_str())))
            .write_atomically(out)
            .unwrap();
    }

    #[test]
    fn finds_lost_duplicated_and_invented_records() {
        let tmp = std::env::temp_dir().join(format!("streamwal-demo-check-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        write(&tmp, 1_000, &[0, 1, 2]);
        write(&tmp, 2_000, &[3, 4]);
        let acked = [true, true, true, true, false, false];
        let v = verify(&tmp, 6, &acked);
        assert!(v.pass(), "{:?}", v.problems);
        assert_eq!((v.acked_once, v.unacked_counted, v.files), (4, 1, 2));

        write(&tmp, 3_000, &[4, 9]);
        let v = verify(&tmp, 6, &[true; 6]);
        let all = v.problems.join("\n");
        assert!(all.contains("record 9, never sent"), "{all}");
        assert!(all.contains("record 4 was counted 2 times"), "{all}");
        assert!(all.contains("record 5 was never counted"), "{all}");
        assert_eq!((v.lost, v.duplicated, v.invented), (1, 1, 1));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
