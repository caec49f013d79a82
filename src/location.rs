//! Where a part of the crate keeps its data: a directory on a file system
//! (the real one, the crash simulator, a fault-injecting wrapper), or, with
//! the `object-store` feature, a prefix in an object store. Parsed once,
//! where the user names it; every part opens from one.
//!
//! The parts never look inside a location themselves: the log and the
//! checkpoint store each define the small backend trait they need
//! ([`crate::wal`]'s `LogBackend`, [`crate::checkpoint`]'s
//! `CheckpointBackend`), and this module hands them the backend for the
//! location they were given.

use crate::error::Result;
use crate::storage::{StdStorage, Storage};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A directory on a file system, or a prefix in an object store.
///
/// A path converts into a directory on the real file system, so
/// `Wal::open(&dir, opts)` reads as it always did:
///
/// ```
/// use streamwal::{Location, Wal, WalOptions};
/// # fn main() -> streamwal::Result<()> {
/// # let tmp = tempfile::tempdir().unwrap();
/// let wal = Wal::open(tmp.path().join("wal"), WalOptions::default())?;
/// assert_eq!(wal.location().path(), Some(tmp.path().join("wal").as_path()));
/// // The same directory through another storage (the simulator, a faulty one):
/// let on = Location::dir_on(std::sync::Arc::new(streamwal::storage::MemStorage::new()), "/wal");
/// let in_memory = Wal::open(on, WalOptions::default())?;
/// # drop((wal, in_memory));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Location(Place);

#[derive(Clone)]
enum Place {
    Dir {
        path: PathBuf,
        storage: Arc<dyn Storage>,
    },
    #[cfg(feature = "object-store")]
    Object(crate::object::ObjectLocation),
}

impl Location {
    /// The directory `path` on the real file system.
    pub fn dir(path: impl AsRef<Path>) -> Location {
        Location::dir_on(Arc::new(StdStorage::new()), path)
    }

    /// The directory `path` on `storage` (the crash simulator, a
    /// fault-injecting wrapper, an in-memory file system).
    pub fn dir_on(storage: Arc<dyn Storage>, path: impl AsRef<Path>) -> Location {
        Location(Place::Dir {
            path: path.as_ref().to_path_buf(),
            storage,
        })
    }

    /// The location a URL names: `s3://bucket/prefix` or `memory:///prefix`
    /// on object storage (see [`crate::object::ObjectLocation::parse`];
    /// every parse of a `memory://` URL is a new, empty store), or, for
    /// `file:///path`, that directory on the real file system (the durable
    /// local backend; the `object_store` crate's own does not fsync).
    ///
    /// # Errors
    /// [`crate::Error::InvalidUrl`] for a URL that does not parse or names
    /// an unsupported scheme.
    #[cfg(feature = "object-store")]
    pub fn parse(url: &str) -> Result<Location> {
        Ok(match crate::object::file_url_path(url)? {
            Some(dir) => Location::dir(dir),
            None => Location(Place::Object(crate::object::ObjectLocation::parse(url)?)),
        })
    }

    /// The location `name` below this one: a subdirectory on the same
    /// storage, or a sub-prefix in the same store.
    ///
    /// # Errors
    /// [`crate::Error::InvalidUrl`] if `name` is not a valid object-path
    /// segment (object storage only).
    pub fn child(&self, name: &str) -> Result<Location> {
        Ok(Location(match &self.0 {
            Place::Dir { path, storage } => Place::Dir {
                path: path.join(name),
                storage: storage.clone(),
            },
            #[cfg(feature = "object-store")]
            Place::Object(o) => Place::Object(o.child(name)?),
        }))
    }

    /// The directory, if this is one.
    pub fn path(&self) -> Option<&Path> {
        match &self.0 {
            Place::Dir { path, .. } => Some(path),
            #[cfg(feature = "object-store")]
            Place::Object(_) => None,
        }
    }

    /// The storage the directory is on, if this is a directory.
    pub fn storage(&self) -> Option<&Arc<dyn Storage>> {
        match &self.0 {
            Place::Dir { storage, .. } => Some(storage),
            #[cfg(feature = "object-store")]
            Place::Object(_) => None,
        }
    }

    /// The object-storage prefix, if this is one.
    #[cfg(feature = "object-store")]
    pub fn object(&self) -> Option<&crate::object::ObjectLocation> {
        match &self.0 {
            Place::Dir { .. } => None,
            Place::Object(o) => Some(o),
        }
    }

    /// What a message names this location by, as a path (a directory, or
    /// the URL of an object-storage prefix).
    pub fn display_path(&self) -> PathBuf {
        match &self.0 {
            Place::Dir { path, .. } => path.clone(),
            #[cfg(feature = "object-store")]
            Place::Object(o) => PathBuf::from(o.url()),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Place::Dir { path, .. } => write!(f, "{}", path.display()),
            #[cfg(feature = "object-store")]
            Place::Object(o) => f.write_str(o.url()),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Place::Dir { path, storage } => f
                .debug_struct("Location::Dir")
                .field("path", path)
                .field("storage", storage)
                .finish(),
            #[cfg(feature = "object-store")]
            Place::Object(o) => f.debug_tuple("Location::Object").field(&o.url()).finish(),
        }
    }
}

impl From<PathBuf> for Location {
    fn from(path: PathBuf) -> Location {
        Location::dir(path)
    }
}

impl From<&PathBuf> for Location {
    fn from(path: &PathBuf) -> Location {
        Location::dir(path.clone())
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::dir(path)
    }
}

impl From<&Location> for Location {
    fn from(loc: &Location) -> Location {
        loc.clone()
    }
}

#[cfg(feature = "object-store")]
impl From<crate::object::ObjectLocation> for Location {
    fn from(o: crate::object::ObjectLocation) -> Location {
        Location(Place::Object(o))
    }
}

impl Location {
    /// The log backend for this location (the dispatch the log itself never
    /// makes: `wal/` knows no object storage).
    pub(crate) fn open_log(
        &self,
        opts: crate::WalOptions,
    ) -> Result<Box<dyn crate::wal::backend::LogBackend>> {
        Ok(match &self.0 {
            Place::Dir { path, storage } => Box::new(crate::wal::FileWal::open_with_storage(
                storage.clone(),
                path,
                opts,
            )?),
            #[cfg(feature = "object-store")]
            Place::Object(o) => Box::new(crate::object::ObjectLog::open(o.clone(), opts)?),
        })
    }
}

impl Location {
    /// The checkpoint backend for this location (the dispatch the store
    /// itself never makes: `checkpoint/` knows no object storage).
    pub(crate) fn open_checkpoints(
        &self,
        opts: &crate::CheckpointOptions,
    ) -> Result<Box<dyn crate::checkpoint::CheckpointBackend>> {
        Ok(match &self.0 {
            Place::Dir { path, storage } => Box::new(crate::checkpoint::FileCheckpoints::open(
                storage.clone(),
                path,
                opts.keep,
            )?),
            #[cfg(feature = "object-store")]
            Place::Object(o) => Box::new(crate::object::ObjectCheckpointStore::open(
                o.clone(),
                opts.clone(),
            )?),
        })
    }
}
