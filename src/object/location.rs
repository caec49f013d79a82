//! Where objects live: a store, a prefix in it, and a runtime to drive its
//! requests from blocking code.

use crate::error::{Error, Result};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use std::path::PathBuf;
use std::sync::Arc;

/// A prefix in an object store, and the runtime this crate drives its
/// requests with.
#[derive(Debug, Clone)]
pub struct ObjectLocation {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// Shared with the locations [`ObjectLocation::child`] made: a store's
    /// connections belong to the runtime that opened them.
    rt: Arc<Runtime>,
}

/// A current-thread runtime that any thread may drive with `block_on`.
#[derive(Debug)]
struct Runtime {
    /// Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside another runtime;
        // shutting it down in the background never does.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The directory a `file://` URL names; `None` for any other scheme.
///
/// # Errors
/// [`Error::InvalidUrl`] if `url` does not parse, or is a `file://` URL
/// that names no local path.
pub fn file_url_path(url: &str) -> Result<Option<PathBuf>> {
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if parsed.scheme() != "file" {
        return Ok(None);
    }
    parsed
        .to_file_path()
        .map(Some)
        .map_err(|()| invalid("not a local path"))
}

/// Why a concurrent GET failed (mapped to [`Error`] by the caller).
enum Fetch {
    Remote(object_store::Error),
    TooLarge(u64),
}

type FetchResult = std::result::Result<Option<Vec<u8>>, Fetch>;

/// How a create-only PUT went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// The object did not exist and now holds our bytes.
    Yes,
    /// An object of that name already existed; nothing was written.
    AlreadyExists,
}

impl ObjectLocation {
    /// Parse a URL:
    /// - `s3://bucket/prefix`: Amazon S3 or an S3-compatible server. Region,
    ///   credentials and endpoint come from the usual `AWS_*` environment
    ///   variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    ///   `AWS_REGION`, `AWS_ENDPOINT`; `AWS_ALLOW_HTTP=true` for a plain-HTTP
    ///   endpoint such as a test server).
    /// - `memory:///prefix`: a new, empty in-memory store (for tests; nothing
    ///   survives the process).
    ///
    /// `file://` is refused: the `object_store` crate's local backend does
    /// not fsync, so it could not keep this crate's durability promise.
    /// [`crate::Location::parse`] takes a `file://` URL to the crate's own
    /// durable local directory instead.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] for a URL that does not parse or names an
    /// unsupported scheme.
    pub fn parse(url: &str) -> Result<ObjectLocation> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let (store, prefix): (Arc<dyn ObjectStore>, ObjectPath) = match parsed.scheme() {
            "s3" => {
                let env = std::env::vars()
                    .filter(|(k, _)| k.starts_with("AWS_"))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v));
                let (store, prefix) = object_store::parse_url_opts(&parsed, env)
                    .map_err(|e| invalid(e.to_string()))?;
                (Arc::from(store), prefix)
            }
            "memory" => {
                let prefix = ObjectPath::parse(parsed.path().trim_start_matches('/'))
                    .map_err(|e| invalid(e.to_string()))?;
                (Arc::new(object_store::memory::InMemory::new()), prefix)
            }
            "file" => {
                return Err(invalid(
                    "file:// is not durable through object_store; \
                     Location::parse opens it as a local directory"
                        .into(),
                ));
            }
            other => return Err(invalid(format!("unsupported scheme {other}"))),
        };
        ObjectLocation::build(store, prefix, url.to_string())
    }

    /// A prefix in a store the caller built (for example an in-memory store
    /// shared by two locations, or a store wrapped to inject faults).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if `prefix` is not a valid object path.
    pub fn with_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Result<ObjectLocation> {
        let url = format!("{store}/{prefix}");
        let prefix = ObjectPath::parse(prefix).map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        ObjectLocation::build(store, prefix, url)
    }

    fn build(store: Arc<dyn ObjectStore>, prefix: ObjectPath, url: String) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("start runtime", &url, e))?;
        Ok(ObjectLocation {
            store,
            prefix,
            url,
            rt: Arc::new(Runtime { rt: Some(rt) }),
        })
    }

    /// The location `name` below this one, in the same store, sharing its
    /// runtime (a context keeps its log, journal and checkpoints in three
    /// such children of one URL).
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] if `name` is not a valid path segment.
    pub fn child(&self, name: &str) -> Result<ObjectLocation> {
        let part = object_store::path::PathPart::parse(name).map_err(|e| Error::InvalidUrl {
            url: format!("{}/{name}", self.url.trim_end_matches('/')),
            reason: e.to_string(),
        })?;
        if name.is_empty() {
            return Err(Error::InvalidUrl {
                url: self.url.clone(),
                reason: "empty child name".into(),
            });
        }
        Ok(ObjectLocation {
            store: self.store.clone(),
            prefix: self.prefix.parts().chain(std::iter::once(part)).collect(),
            url: format!("{}/{name}", self.url.trim_end_matches('/')),
            rt: self.rt.clone(),
        })
    }

    /// Drive `f` to completion on this location's runtime.
    fn run<F: std::future::Future>(&self, f: F) -> Result<F::Output> {
        let misuse = Error::InvalidOptions(
            "object storage was called from inside an async runtime; use spawn_blocking",
        );
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(misuse);
        }
        match &self.rt.rt {
            Some(rt) => Ok(rt.block_on(f)),
            None => Err(misuse),
        }
    }

    /// The URL (or a description of the store) and prefix.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How an object is named in errors: the location's URL and its name.
    pub(crate) fn display(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.url.trim_end_matches('/')))
    }

    fn key(&self, name: &str) -> ObjectPath {
        self.prefix
            .parts()
            .chain(ObjectPath::from(name).parts())
            .collect()
    }

    fn remote_error(&self, op: &'static str, name: &str, e: object_store::Error) -> Error {
        Error::Remote {
            op,
            location: self.display(name).display().to_string(),
            source: Box::new(e),
        }
    }

    /// PUT `bytes` as `name` only if no object of that name exists
    /// (a conditional PUT: `If-None-Match: *` on S3).
    pub(crate) fn put_new(&self, name: &str, bytes: impl Into<PutPayload>) -> Result<Created> {
        let key = self.key(name);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.run(self.store.put_opts(&key, bytes.into(), opts))? {
            Ok(_) => Ok(Created::Yes),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.remote_error("conditional put", name, e)),
        }
    }

    /// The whole object `name`, if it is at most `max` bytes; `Ok(None)` if
    /// it does not exist. A larger object is [`Error::TooLarge`], read no
    /// further than its size.
    pub(crate) fn get(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let key = self.key(name);
        self.run(async {
            let got = match self.store.get_opts(&key, GetOptions::default()).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.remote_error("get", name, e)),
            };
            if got.meta.size > max {
                return Err(Error::TooLarge {
                    size: got.meta.size,
                    max,
                });
            }
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.remote_error("get", name, e))?;
            Ok(Some(bytes.to_vec()))
        })?
    }

    /// [`ObjectLocation::get`] of every name in `names`, issued
    /// concurrently (one request per name), answered in the order of
    /// `names`. The outer error is for a call from inside an async runtime.
    pub(crate) fn get_many(
        &self,
        names: &[String],
        max: u64,
    ) -> Result<Vec<Result<Option<Vec<u8>>>>> {
        let requests: Vec<(usize, Arc<dyn ObjectStore>, ObjectPath)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| (i, self.store.clone(), self.key(name)))
            .collect();
        let joined = self.run(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (i, store, key) in requests {
                tasks.spawn(async move {
                    let got = match store.get_opts(&key, GetOptions::default()).await {
                        Ok(got) => got,
                        Err(object_store::Error::NotFound { .. }) => return (i, Ok(None)),
                        Err(e) => return (i, Err(Fetch::Remote(e))),
                    };
                    if got.meta.size > max {
                        return (i, Err(Fetch::TooLarge(got.meta.size)));
                    }
                    let bytes = got.bytes().await.map_err(Fetch::Remote);
                    (i, bytes.map(|b| Some(b.to_vec())))
                });
            }
            let mut out: Vec<(usize, FetchResult)> = Vec::new();
            while let Some(done) = tasks.join_next().await {
                // A task that panicked or was cancelled leaves its slot an
                // error below.
                if let Ok(r) = done {
                    out.push(r);
                }
            }
            out
        })?;
        let mut results: Vec<Result<Option<Vec<u8>>>> = names
            .iter()
            .map(|n| {
                Err(Error::Remote {
                    op: "get",
                    location: self.display(n).display().to_string(),
                    source: "the request's task did not finish".into(),
                })
            })
            .collect();
        for (i, r) in joined {
            results[i] = r.map_err(|e| match e {
                Fetch::Remote(e) => self.remote_error("get", &names[i], e),
                Fetch::TooLarge(size) => Error::TooLarge { size, max },
            });
        }
        Ok(results)
    }

    /// The first `len` bytes of `name` (fewer if it is shorter); `Ok(None)`
    /// if it does not exist. Two requests (the size, then the range).
    pub(crate) fn get_head(&self, name: &str, len: u64) -> Result<Option<Vec<u8>>> {
        let key = self.key(name);
        self.run(async {
            // A range past the end of an object is an error on S3: ask for
            // no more than the object holds (nothing, for an empty one).
            let size = match self.store.head(&key).await {
                Ok(meta) => meta.size,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.remote_error("head", name, e)),
            };
            let len = len.min(size);
            if len == 0 {
                return Ok(Some(Vec::new()));
            }
            let opts = GetOptions {
                range: Some(GetRange::Bounded(0..len)),
                ..GetOptions::default()
            };
            let got = match self.store.get_opts(&key, opts).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.remote_error("get", name, e)),
            };
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.remote_error("get", name, e))?;
            // A server that ignores the range sends everything: keep the head.
            let keep = bytes.len().min(usize::try_from(len).unwrap_or(usize::MAX));
            Ok(Some(bytes[..keep].to_vec()))
        })?
    }

    /// Bytes `start..start + len` of `name` (one ranged GET); `Ok(None)` if
    /// the object does not exist. Fewer bytes come back if the object is
    /// shorter (the caller checks); a server that ignores the range and
    /// sends the whole object is cut to the range.
    pub(crate) fn get_range(&self, name: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>> {
        let key = self.key(name);
        let end = start.saturating_add(len);
        self.run(async {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..end)),
                ..GetOptions::default()
            };
            let got = match self.store.get_opts(&key, opts).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.remote_error("get", name, e)),
            };
            let whole = got.range.start == 0 && got.range.end == got.meta.size && start > 0;
            let bytes = got
                .bytes()
                .await
                .map_err(|e| self.remote_error("get", name, e))?;
            let from = if whole {
                usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len())
            } else {
                0
            };
            let to = from
                .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
                .min(bytes.len());
            Ok(Some(bytes[from..to].to_vec()))
        })?
    }

    /// The names of the objects directly under `dir` (relative to `dir`).
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<String>> {
        Ok(self.list_sized(dir)?.into_iter().map(|(n, _)| n).collect())
    }

    /// The names and sizes of the objects directly under `dir`.
    pub(crate) fn list_sized(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let key = self.key(dir);
        let listed = self
            .run(self.store.list_with_delimiter(Some(&key)))?
            .map_err(|e| self.remote_error("list", dir, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|meta| {
                let size = meta.size;
                meta.location.filename().map(|n| (n.to_string(), size))
            })
            .collect())
    }

    /// Delete `name`; an object that is already gone is not an error.
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        match self.run(self.store.delete(&key))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.remote_error("delete", name, e)),
        }
    }
}
