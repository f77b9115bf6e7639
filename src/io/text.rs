//! Text outputs (JSON specs, reports, CSV, SVG charts) written atomically.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `text` to `path` atomically: a temporary file beside it, then a rename, so that a
/// failure leaves whatever was at `path` untouched and never a partial file.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("report.csv");
/// shears::io::write_text(&path, "layer,sparsity\nfc,0.5\n")?;
/// assert_eq!(std::fs::read_to_string(&path)?, "layer,sparsity\nfc,0.5\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when the directory cannot be written or the rename fails.
pub fn write_text(path: impl AsRef<Path>, text: &str) -> Result<()> {
    let path = path.as_ref();
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp = tempfile::NamedTempFile::new_in(dir.unwrap_or(Path::new(".")))
        .map_err(|e| Error::io(path, e))?;
    tmp.write_all(text.as_bytes())
        .map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_text(&path, "old").unwrap();
        // A directory that does not exist: nothing is created, the error names the path.
        let missing = dir.path().join("no/such/dir/out.txt");
        let err = write_text(&missing, "new").unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        write_text(&path, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
    }
}
