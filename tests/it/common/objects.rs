//! Object-storage backends for tests: an in-memory store always, and a real
//! S3-protocol server when `STREAMWAL_S3_URL` names a bucket on one
//! (`.ci/run` starts moto and sets it; with `STREAMWAL_REQUIRE_S3=1` a
//! missing URL fails the test instead of skipping the S3 half).

use std::sync::Arc;
use streamwal::object::ObjectLocation;
use streamwal::object::object_store::memory::InMemory;
use streamwal::object::object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path};

/// A store in which several locations can open the same prefix.
pub trait Backend: Send + Sync {
    /// A fresh handle on `sub` below this backend's prefix.
    fn location(&self, sub: &str) -> ObjectLocation;
    /// The store and the full prefix of `sub`, to plant or remove objects
    /// behind the crate's back.
    fn raw(&self, sub: &str) -> (Arc<dyn ObjectStore>, String);
    /// A name for messages.
    fn name(&self) -> &'static str;
}

struct Memory {
    store: Arc<InMemory>,
}

impl Backend for Memory {
    fn location(&self, sub: &str) -> ObjectLocation {
        ObjectLocation::with_store(self.store.clone(), &format!("t/{sub}")).unwrap()
    }
    fn raw(&self, sub: &str) -> (Arc<dyn ObjectStore>, String) {
        (self.store.clone(), format!("t/{sub}"))
    }
    fn name(&self) -> &'static str {
        "memory"
    }
}

struct S3 {
    url: String,
}

impl Backend for S3 {
    fn location(&self, sub: &str) -> ObjectLocation {
        ObjectLocation::parse(&format!("{}/{sub}", self.url)).unwrap()
    }
    fn raw(&self, sub: &str) -> (Arc<dyn ObjectStore>, String) {
        let parsed = url::Url::parse(&format!("{}/{sub}", self.url)).unwrap();
        let env = std::env::vars()
            .filter(|(k, _)| k.starts_with("AWS_"))
            .map(|(k, v)| (k.to_ascii_lowercase(), v));
        let (store, path) = streamwal::object::object_store::parse_url_opts(&parsed, env).unwrap();
        (Arc::from(store), path.to_string())
    }
    fn name(&self) -> &'static str {
        "s3"
    }
}

/// The backends a test runs on, each under a prefix of the test's own.
pub fn backends(test: &str) -> Vec<Arc<dyn Backend>> {
    let mut all: Vec<Arc<dyn Backend>> = vec![Arc::new(Memory {
        store: Arc::new(InMemory::new()),
    })];
    match std::env::var("STREAMWAL_S3_URL") {
        Ok(base) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let url = format!("{}/{test}-{nanos}", base.trim_end_matches('/'));
            all.push(Arc::new(S3 { url }));
        }
        Err(_) => {
            assert!(
                std::env::var_os("STREAMWAL_REQUIRE_S3").is_none(),
                "STREAMWAL_REQUIRE_S3 is set but STREAMWAL_S3_URL is not"
            );
            eprintln!("{test}: STREAMWAL_S3_URL not set; memory store only");
        }
    }
    all
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Put `bytes` as `name` under `sub`, unconditionally.
pub fn plant(b: &dyn Backend, sub: &str, name: &str, bytes: Vec<u8>) {
    let (store, prefix) = b.raw(sub);
    rt().block_on(store.put(
        &Path::from(format!("{prefix}/{name}")),
        PutPayload::from(bytes),
    ))
    .unwrap();
}

/// The bytes of `name` under `sub`.
pub fn fetch(b: &dyn Backend, sub: &str, name: &str) -> Vec<u8> {
    let (store, prefix) = b.raw(sub);
    let rt = rt();
    let got = rt
        .block_on(store.get(&Path::from(format!("{prefix}/{name}"))))
        .unwrap();
    rt.block_on(got.bytes()).unwrap().to_vec()
}

/// Delete `name` under `sub`.
pub fn remove(b: &dyn Backend, sub: &str, name: &str) {
    let (store, prefix) = b.raw(sub);
    rt().block_on(store.delete(&Path::from(format!("{prefix}/{name}"))))
        .unwrap();
}

/// What an [`Interleaving`] store does once: when a listing of a prefix
/// ending in `listing_ends_with` arrives, put `plant` (full paths) into the
/// store, before the listing is answered or after it.
pub struct Hook {
    /// Which listing triggers it.
    pub listing_ends_with: String,
    /// Plant after computing the listing (the listing misses the objects).
    pub after_listing: bool,
    /// (full path, bytes) to put.
    pub plant: Vec<(String, Vec<u8>)>,
    /// Full paths to delete, after planting.
    pub remove: Vec<String>,
}

/// What an [`Interleaving`] store does to PUTs (see [`Interleaving::fault`]).
pub mod put_fault {
    /// Pass PUTs through.
    pub const NONE: u8 = 0;
    /// Store the object, then report an error (a lost answer).
    pub const STORE_THEN_FAIL: u8 = 1;
    /// Report an error and store nothing.
    pub const FAIL: u8 = 2;
    /// Panic inside the PUT.
    pub const PANIC: u8 = 3;
    /// Store after a pause of 20 ms (a slow server).
    pub const SLOW: u8 = 4;
}

/// An in-memory store that runs a [`Hook`] between two of this crate's
/// requests: what a concurrent driver does meanwhile.
pub struct Interleaving {
    /// The store underneath.
    pub inner: Arc<InMemory>,
    hook: std::sync::Mutex<Option<Hook>>,
    /// One of [`put_fault`]'s modes, applied to every PUT.
    pub fault: std::sync::atomic::AtomicU8,
}

impl Interleaving {
    /// A wrapper over `inner` with no hook armed.
    pub fn new(inner: Arc<InMemory>) -> Arc<Interleaving> {
        Arc::new(Interleaving {
            inner,
            hook: std::sync::Mutex::new(None),
            fault: std::sync::atomic::AtomicU8::new(put_fault::NONE),
        })
    }
    /// Arm `hook` for the next matching listing.
    pub fn arm(&self, hook: Hook) {
        *self.hook.lock().unwrap() = Some(hook);
    }
    async fn plant(&self, hook: Option<Hook>) -> OsResult<()> {
        let Some(hook) = hook else { return Ok(()) };
        for (path, bytes) in hook.plant {
            self.inner
                .put(&Path::from(path), PutPayload::from(bytes))
                .await?;
        }
        for path in hook.remove {
            self.inner.delete(&Path::from(path)).await?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Interleaving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Interleaving")
    }
}

impl std::fmt::Display for Interleaving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interleaving({})", self.inner)
    }
}

use streamwal::object::object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta,
    PutMultipartOptions, PutOptions, PutResult, Result as OsResult,
};

#[async_trait::async_trait]
impl ObjectStore for Interleaving {
    async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> OsResult<PutResult> {
        let failed = || streamwal::object::object_store::Error::Generic {
            store: "interleaving",
            source: "injected PUT failure".into(),
        };
        match self.fault.load(std::sync::atomic::Ordering::SeqCst) {
            put_fault::STORE_THEN_FAIL => {
                self.inner.put_opts(l, p, o).await?;
                Err(failed())
            }
            put_fault::FAIL => Err(failed()),
            put_fault::PANIC => panic!("injected panic in PUT"),
            put_fault::SLOW => {
                std::thread::sleep(std::time::Duration::from_millis(20));
                self.inner.put_opts(l, p, o).await
            }
            _ => self.inner.put_opts(l, p, o).await,
        }
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> OsResult<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> OsResult<GetResult> {
        self.inner.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<'static, OsResult<Path>>,
    ) -> futures::stream::BoxStream<'static, OsResult<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&Path>,
    ) -> futures::stream::BoxStream<'static, OsResult<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> OsResult<ListResult> {
        let hook = {
            let mut armed = self.hook.lock().unwrap();
            let matches = armed.as_ref().is_some_and(|h| {
                prefix.is_some_and(|p| p.as_ref().ends_with(h.listing_ends_with.as_str()))
            });
            if matches { armed.take() } else { None }
        };
        let after = hook.as_ref().is_some_and(|h| h.after_listing);
        if !after {
            self.plant(hook).await?;
            return self.inner.list_with_delimiter(prefix).await;
        }
        let listed = self.inner.list_with_delimiter(prefix).await;
        self.plant(hook).await?;
        listed
    }
    async fn copy_opts(&self, from: &Path, to: &Path, o: CopyOptions) -> OsResult<()> {
        self.inner.copy_opts(from, to, o).await
    }
}
