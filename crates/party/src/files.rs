//! Writing a party's files so that a crash never leaves half of one: the daemon's sealed
//! shares and identity, the device party's file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A write that failed, with the file it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

fn at(path: &Path) -> impl Fn(std::io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` as `dir/name` atomically: a temporary file (mode 0600 from its creation)
/// written and fsynced, renamed over the name, then the directory fsynced, so the name
/// holds either the old bytes or the new ones, never a mix, and the rename survives a power
/// cut. `fault` is called between the steps (crash tests kill the process there).
pub fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    fault: &dyn Fn(&str),
) -> Result<(), WriteError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(at(&tmp))?;
        f.write_all(bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
    }
    fault(&format!("{name}: temporary file written"));
    fs::rename(&tmp, &target).map_err(at(&target))?;
    fault(&format!("{name}: renamed"));
    sync_dir(dir)?;
    fault(&format!("{name}: directory synced"));
    Ok(())
}

/// Writes `bytes` as a new file `path` (mode 0600) that must not exist yet: a synced
/// temporary file in the same directory, linked to the name only if nothing has it
/// (`persist_noclobber`, one step, so two writers cannot both think they made it), then the
/// directory fsynced. For files that must never replace another (backups: an older one must
/// not vanish by mistake). An existing file is refused with `AlreadyExists`.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".new-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(at(dir))?;
    tmp.write_all(bytes).map_err(at(tmp.path()))?;
    tmp.as_file().sync_all().map_err(at(tmp.path()))?;
    tmp.persist_noclobber(path).map_err(|e| WriteError {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    sync_dir(dir)
}

/// Fsyncs a directory, so a rename or removal in it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_new_file_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backup.bak");
        super::write_new(&p, b"first").unwrap();
        let e = super::write_new(&p, b"second").unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    use super::*;

    #[test]
    fn replaces_whole_files_private_to_the_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cosigner-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        write_atomic(&dir, "f", b"one", &|_| {}).unwrap();
        write_atomic(&dir, "f", b"two", &|_| {}).unwrap();
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"two");
        let mode = fs::metadata(dir.join("f")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.join(".f.tmp").exists());
        let err = write_atomic(&dir.join("missing"), "f", b"x", &|_| {}).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
