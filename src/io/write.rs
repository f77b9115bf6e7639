//! Writing safetensors files atomically, producing one tensor's bytes at a time.
//!
//! Every writer here goes through [`write_atomic`], which hands lazily produced tensors to the
//! safetensors crate's `serialize_to_file`. That function streams: it collects the views, writes
//! the header, then calls `View::data()` once per tensor and writes the result through a 1 MiB
//! buffer before asking for the next one. So a tensor's bytes (read from a source file, masked,
//! or encoded from `f32`) exist only while it is being written, and memory stays at about one
//! tensor whatever the size of the checkpoint.
//!
//! Two properties of that function shape the rest:
//! - `View::data()` cannot fail, so a tensor that cannot be produced (a read error) records its
//!   error in a shared cell and yields no bytes; the error is returned once the crate is done.
//! - It replaces its target itself (a sibling temporary file, then a rename). To be able to throw
//!   a finished but faulty file away, it is given a target inside a private temporary directory
//!   created (with `tempfile`) in the destination directory, and only a complete, error-free
//!   file is then renamed onto the destination. A failure at any point leaves the destination
//!   as it was and removes the temporary directory.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use ndarray::ArrayViewD;
use safetensors::{Dtype, SafeTensorError, View};

use super::codec::Float;
use super::file::{SafetensorsFile, TensorEntry};
use crate::error::{Error, Result};
use crate::mask::{Mask, MaskSet};

/// The header key of the metadata map, which no tensor may take.
const METADATA_KEY: &str = "__metadata__";

/// Where the bytes of a tensor being written come from.
#[derive(Debug)]
pub(crate) enum Bytes<'a> {
    /// Bytes already in the file's format, written as they are.
    Stored(&'a [u8]),
    /// `f32` values (any layout) encoded in `float`, row-major. When `original` decodes to
    /// exactly these values it is written instead, so an unchanged tensor keeps its bytes.
    Values {
        values: ArrayViewD<'a, f32>,
        float: Float,
        original: Option<&'a [u8]>,
    },
    /// A keep-mask as `U8`, 1 = kept.
    Flags(&'a Mask),
    /// A tensor of `src`, read when it is written, its elements pruned by `mask` set to zero.
    Masked {
        src: &'a SafetensorsFile,
        entry: &'a TensorEntry,
        mask: Option<&'a Mask>,
    },
}

/// A tensor to write.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) bytes: Bytes<'a>,
}

impl Outgoing<'_> {
    fn data_len(&self) -> usize {
        match &self.bytes {
            Bytes::Stored(bytes) => bytes.len(),
            Bytes::Values { values, float, .. } => values.len() * float.size(),
            Bytes::Flags(mask) => mask.len(),
            Bytes::Masked { entry, .. } => entry.byte_len(),
        }
    }

    fn produce(&self) -> Result<Cow<'_, [u8]>> {
        Ok(match &self.bytes {
            Bytes::Stored(bytes) => Cow::Borrowed(bytes),
            Bytes::Values {
                values,
                float,
                original,
            } => match original {
                Some(original) if float.decodes_to(original, values) => Cow::Borrowed(original),
                _ => {
                    let mut bytes = Vec::with_capacity(self.data_len());
                    float.encode_extend(values.iter().copied(), &mut bytes);
                    Cow::Owned(bytes)
                }
            },
            Bytes::Flags(mask) => {
                Cow::Owned(mask.as_slice().iter().map(|&k| u8::from(k)).collect())
            }
            Bytes::Masked { src, entry, mask } => {
                let mut bytes = src.read_entry_bytes(entry)?;
                if let Some(mask) = mask {
                    // Zero bytes are +0.0 in every float format: pruned elements become exactly
                    // zero and kept ones keep their bit patterns, whatever the precision.
                    let size = Float::require(entry.dtype(), entry.name())?.size();
                    for (element, &keep) in bytes.chunks_exact_mut(size).zip(mask.as_slice()) {
                        if !keep {
                            element.fill(0);
                        }
                    }
                }
                Cow::Owned(bytes)
            }
        })
    }
}

/// An [`Outgoing`] tensor as the safetensors writer sees it.
struct Lazy<'a, 'f> {
    tensor: Outgoing<'a>,
    failure: &'f RefCell<Option<Error>>,
}

impl View for Lazy<'_, '_> {
    fn dtype(&self) -> Dtype {
        self.tensor.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.tensor.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if self.failure.borrow().is_some() {
            return Cow::Borrowed(&[]);
        }
        self.tensor.produce().unwrap_or_else(|e| {
            *self.failure.borrow_mut() = Some(e);
            Cow::Borrowed(&[])
        })
    }

    fn data_len(&self) -> usize {
        self.tensor.data_len()
    }
}

/// Writes `tensors` and `metadata` to `path` as a safetensors file, all or nothing (see the
/// module documentation). Tensors are ordered as the safetensors crate orders them: by dtype,
/// then name.
pub(crate) fn write_atomic(
    path: &Path,
    tensors: Vec<Outgoing<'_>>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let mut seen = HashSet::with_capacity(tensors.len());
    if let Some(t) = tensors.iter().find(|t| !seen.insert(t.name.as_str())) {
        return Err(Error::invalid(
            "tensor names",
            format!("`{}` appears more than once", t.name),
        ));
    }
    // The crate would write it as a tensor, and no reader could tell it from the metadata map
    // (safetensors/safetensors#849).
    if seen.contains(METADATA_KEY) {
        return Err(Error::invalid(
            "tensor names",
            format!("`{METADATA_KEY}` is reserved for the metadata map"),
        ));
    }
    // safetensors 0.8 writes an invalid header (`{},"__metadata__":{}`) for an empty metadata
    // map and no tensors (safetensors/safetensors#761). Such a file carries nothing either way.
    let metadata = metadata.filter(|m| !m.is_empty() || !tensors.is_empty());
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let staging = tempfile::Builder::new()
        .prefix(".shears-")
        .tempdir_in(dir)
        .map_err(|e| Error::io(path, e))?;
    let staged = staging.path().join("staged.safetensors");
    let failure = RefCell::new(None);
    let views = tensors.into_iter().map(|tensor| {
        let name = tensor.name.clone();
        let failure = &failure;
        (name, Lazy { tensor, failure })
    });
    let written = safetensors::serialize_to_file(views, metadata, &staged);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    written.map_err(|e| match e {
        SafeTensorError::IoError(e) => Error::io(path, e),
        other => Error::InvalidFile {
            path: path.to_path_buf(),
            reason: format!("cannot be written as safetensors: {other}"),
        },
    })?;
    // On disk before it takes the destination's name, so that a crash cannot leave a renamed
    // but empty file (the crate does not sync). Opened for writing: Windows needs that to flush.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&staged)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))?;
    std::fs::rename(&staged, path).map_err(|e| Error::io(path, e))
    // `staging`, now empty, is removed when dropped.
}

/// Writes `f32` tensors to a safetensors file, each converted to its dtype (`F32`, `F16`,
/// `BF16` or `F64`, rounding to nearest, ties to even), with `metadata` as the file's
/// `__metadata__`.
///
/// The arrays may be in any layout (transposed views, slices with steps): they are written in
/// row-major order, as the format requires. Each tensor is encoded only when it is written, so
/// memory stays at about the largest tensor's bytes. The file is replaced atomically: on error
/// the destination is left as it was and no temporary file remains.
///
/// ```
/// use ndarray::array;
/// use shears::io::{Dtype, SafetensorsFile, save_tensors};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("w.safetensors");
/// let w = array![[1.0_f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
/// let metadata = [("format".to_string(), "pt".to_string())].into_iter().collect();
/// // A transposed view is written as the [3, 2] row-major array it shows.
/// save_tensors(&path, [("w_t", w.t().into_dyn(), Dtype::BF16)], Some(metadata))?;
///
/// let file = SafetensorsFile::open(&path)?;
/// assert_eq!(file.read_f32("w_t")?, w.t().into_dyn());
/// assert_eq!(file.metadata().unwrap()["format"], "pt");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::UnsupportedDtype`] for a dtype other than the four float types;
/// [`Error::InvalidParameter`] when a name appears twice; [`Error::Io`] when writing fails.
pub fn save_tensors<'a, S: AsRef<str>>(
    path: impl AsRef<Path>,
    tensors: impl IntoIterator<Item = (S, ArrayViewD<'a, f32>, Dtype)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tensors = tensors
        .into_iter()
        .map(|(name, values, dtype)| {
            let name = name.as_ref();
            let float = Float::require(dtype, name)?;
            Ok(Outgoing {
                name: name.to_string(),
                dtype,
                shape: values.shape().to_vec(),
                bytes: Bytes::Values {
                    values,
                    float,
                    original: None,
                },
            })
        })
        .collect::<Result<Vec<_>>>()?;
    write_atomic(path.as_ref(), tensors, metadata)
}

/// Copies `src` to `out` with the elements that `masks` prunes set to zero, one tensor at a time.
///
/// - A tensor without a mask is copied byte for byte, whatever its dtype.
/// - A masked tensor (which must be `F32`, `F16`, `BF16` or `F64`) keeps the exact bytes of every
///   kept element, even for `F64`, and gets zero bytes, which are +0.0, for every pruned one.
/// - The `__metadata__` map is copied.
///
/// Every mask is checked against the file before anything is written. Memory stays at about the
/// largest tensor's bytes (plus the masks the caller holds): `src` is never read whole. `out` is
/// replaced atomically: on any error it is left as it was and no temporary file remains; `src`
/// is only read.
///
/// ```
/// use ndarray::array;
/// use shears::io::{Dtype, SafetensorsFile, save_tensors, write_masked};
/// use shears::{Mask, MaskSet};
///
/// let dir = tempfile::tempdir()?;
/// let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
/// let w = array![0.1_f32, -0.2, 0.3, -0.4].into_dyn();
/// save_tensors(&input, [("w", w.view(), Dtype::F64)], None)?;
///
/// let mut masks = MaskSet::new();
/// masks.insert("w", Mask::from_vec(&[4], vec![true, false, false, true])?);
/// let src = SafetensorsFile::open(&input)?;
/// write_masked(&src, &masks, &output)?;
///
/// let out = SafetensorsFile::open(&output)?;
/// assert_eq!(out.read_f32("w")?, array![0.1_f32, 0.0, 0.0, -0.4].into_dyn());
/// assert_eq!(out.read_bytes("w")?[..8], src.read_bytes("w")?[..8]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::UnknownTensor`] for a mask that names no tensor of `src`; [`Error::ShapeMismatch`]
/// for a mask of another shape; [`Error::UnsupportedDtype`] for a mask on a tensor that is not
/// one of the four float types; [`Error::InvalidParameter`] when `out` is `src` itself (through
/// links too), which would destroy the only copy of the unpruned weights; [`Error::Io`] when
/// reading or writing fails.
pub fn write_masked(src: &SafetensorsFile, masks: &MaskSet, out: impl AsRef<Path>) -> Result<()> {
    let out = out.as_ref();
    for (name, mask) in masks.iter() {
        let entry = src.tensor(name).ok_or_else(|| Error::UnknownTensor {
            name: name.to_string(),
        })?;
        if entry.shape() != mask.shape() {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: entry.shape().to_vec(),
                got: mask.shape().to_vec(),
            });
        }
        Float::require(entry.dtype(), name)?;
    }
    if src.is_same_file(out)? {
        return Err(Error::invalid(
            "output path",
            format!(
                "`{}` is the input file; write the pruned checkpoint to another path",
                out.display()
            ),
        ));
    }
    let tensors = src
        .tensors()
        .iter()
        .map(|entry| Outgoing {
            name: entry.name().to_string(),
            dtype: entry.dtype(),
            shape: entry.shape().to_vec(),
            bytes: Bytes::Masked {
                src,
                entry,
                mask: masks.get(entry.name()),
            },
        })
        .collect();
    write_atomic(out, tensors, src.metadata().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::handmade;
    use ndarray::array;
    use std::fs;

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn source(dir: &Path) -> std::path::PathBuf {
        let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[8,16]}}"#;
        let path = dir.join("in.safetensors");
        fs::write(&path, handmade(header, &[7; 16])).unwrap();
        path
    }

    #[test]
    fn a_read_error_while_streaming_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let input = source(dir.path());
        let src = SafetensorsFile::open(&input).unwrap();
        // The source shrinks after it was opened: its last tensor can no longer be read.
        let len = fs::metadata(&input).unwrap().len();
        fs::File::options()
            .write(true)
            .open(&input)
            .unwrap()
            .set_len(len - 1)
            .unwrap();
        let out = dir.path().join("out.safetensors");
        let err = write_masked(&src, &MaskSet::new(), &out).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert_eq!(listing(dir.path()), ["in.safetensors"]);

        // Nor does it replace an existing output.
        fs::write(&out, b"previous").unwrap();
        assert!(write_masked(&src, &MaskSet::new(), &out).is_err());
        assert_eq!(fs::read(&out).unwrap(), b"previous");
        assert_eq!(listing(dir.path()), ["in.safetensors", "out.safetensors"]);
    }

    #[test]
    fn masks_are_checked_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let src = SafetensorsFile::open(source(dir.path())).unwrap();
        let out = dir.path().join("out.safetensors");
        let cases = [
            ("c", Mask::ones(&[2]), "unknown tensor `c`"),
            ("a", Mask::ones(&[3]), "`a` has shape [3], expected [2]"),
            ("b", Mask::ones(&[2]), "tensor `b` has dtype I32"),
        ];
        for (name, mask, message) in cases {
            let masks: MaskSet = [(name, mask)].into_iter().collect();
            let err = write_masked(&src, &masks, &out).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
            assert_eq!(listing(dir.path()), ["in.safetensors"]);
        }
    }

    #[test]
    fn the_input_is_never_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let input = source(dir.path());
        let before = fs::read(&input).unwrap();
        let src = SafetensorsFile::open(&input).unwrap();
        let hard = dir.path().join("hard.safetensors");
        fs::hard_link(&input, &hard).unwrap();
        let mut aliases = vec![
            input.clone(),
            hard,
            dir.path().join(".").join("in.safetensors"),
        ];
        #[cfg(unix)]
        {
            let soft = dir.path().join("soft.safetensors");
            std::os::unix::fs::symlink(&input, &soft).unwrap();
            aliases.push(soft);
        }
        for alias in aliases {
            let err = write_masked(&src, &MaskSet::new(), &alias).unwrap_err();
            assert!(
                err.to_string().contains("is the input file"),
                "{alias:?}: {err}"
            );
        }
        assert_eq!(fs::read(&input).unwrap(), before);
        // A copy is another file.
        let copy = dir.path().join("copy.safetensors");
        fs::copy(&input, &copy).unwrap();
        write_masked(&src, &MaskSet::new(), &copy).unwrap();
    }

    #[test]
    fn save_tensors_refuses_what_it_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = array![1.0_f32].into_dyn();
        let err = save_tensors(&path, [("a", a.view(), Dtype::I32)], None).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDtype { .. }), "{err:?}");
        let twice = [("a", a.view(), Dtype::F32), ("a", a.view(), Dtype::F16)];
        assert!(matches!(
            save_tensors(&path, twice, None),
            Err(Error::InvalidParameter { .. })
        ));
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn edge_cases_of_the_reference_writer_are_avoided() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let a = array![1.0_f32].into_dyn();
        let err = save_tensors(&path, [("__metadata__", a.view(), Dtype::F32)], None).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        assert!(!path.exists());
        // No tensors and an empty metadata map: a valid file (without the map).
        crate::io::save_masks(&path, &MaskSet::new(), Some(HashMap::new())).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        assert!(file.tensors().is_empty() && file.metadata().is_none());
        // With a tensor, the empty map is kept.
        save_tensors(&path, [("a", a.view(), Dtype::F32)], Some(HashMap::new())).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        assert_eq!(file.metadata(), Some(&HashMap::new()));
    }

    #[test]
    fn a_bare_file_name_writes_to_the_current_directory_parent() {
        // `Path::parent` of "x.safetensors" is "": the staging directory must go to ".".
        let out = Path::new("target-io-test-bare.safetensors");
        let a = array![1.0_f32].into_dyn();
        let written = save_tensors(out, [("a", a.view(), Dtype::F32)], None);
        let read = SafetensorsFile::open(out).and_then(|f| f.read_f32("a"));
        let _ = fs::remove_file(out);
        written.unwrap();
        assert_eq!(read.unwrap(), a);
    }
}
