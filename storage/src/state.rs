//! Small state documents other parts of Skein keep on local disk (the
//! alert rules' state, say), written atomically: storage owns everything
//! on disk, so the alert evaluator in the query crate hands its bytes here
//! instead of writing files itself.
//!
//! A document is one file, `<dir>/<name>.json` by convention of the
//! caller; [`StateFile::store`] writes it to a temporary file beside it,
//! fsyncs it, renames it over the old one and fsyncs the directory, so a
//! crash at any point leaves either the old document or the new one,
//! never a mix or an empty file (the rename is atomic on POSIX file
//! systems).

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::Result;

/// One atomically replaced document on local disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The document at `dir/file_name` (the directory is created by the
    /// first [`StateFile::store`]).
    pub fn new(dir: &Path, file_name: &str) -> StateFile {
        StateFile { path: dir.join(file_name) }
    }

    /// Where the document lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The document's bytes as last stored, or `None` when it was never
    /// stored. A temporary file a crash left behind is ignored (and
    /// replaced by the next store).
    ///
    /// # Errors
    /// [`crate::Error::Io`] when the file exists but cannot be read.
    pub fn load(&self) -> Result<Option<Vec<u8>>> {
        match fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces the document with `bytes`. Durable when it returns `Ok`:
    /// the new content is fsynced and so is the directory entry that names
    /// it, so it survives a crash or power loss; on `Err` the previous
    /// document is intact (at worst a temporary file is left beside it).
    ///
    /// # Errors
    /// [`crate::Error::Io`]: the directory cannot be created, or the file
    /// written, synced or renamed (a full disk, say).
    pub fn store(&self, bytes: &[u8]) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &self.path)?;
        // The rename is durable only once the directory is.
        File::open(dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_replaces_and_load_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(&d.path().join("alerts"), "state.json");
        assert_eq!(f.load().unwrap(), None);
        f.store(b"one").unwrap();
        f.store(b"two").unwrap();
        assert_eq!(f.load().unwrap().as_deref(), Some(&b"two"[..]));
        // A leftover temporary file (a crash mid-store) changes nothing.
        fs::write(d.path().join("alerts/.state.json.tmp"), b"half").unwrap();
        assert_eq!(
            StateFile::new(&d.path().join("alerts"), "state.json").load().unwrap().as_deref(),
            Some(&b"two"[..])
        );
        f.store(b"three").unwrap();
        assert_eq!(f.load().unwrap().as_deref(), Some(&b"three"[..]));
    }
}
