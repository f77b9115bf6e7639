//! A safetensors file opened for reading one tensor at a time.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ndarray::{ArrayD, IxDyn};
use safetensors::Dtype;
use safetensors::tensor::TensorInfo;

use super::codec::Float;
use crate::error::{Error, Result};
use crate::params::check_finite;

/// The longest header accepted: the limit the safetensors crate applies (it does not export it).
const MAX_HEADER_LEN: u64 = 100_000_000;

/// Bytes read at a time while a tensor is converted to `f32`, so that a read holds the result
/// and at most this much more. A multiple of every element size.
const CHUNK: usize = 1 << 20;

/// One tensor of a [`SafetensorsFile`]: what the header says about it, checked against the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<u64>,
}

impl TensorEntry {
    /// The tensor's name (PyTorch's dotted name for a parameter).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The element type stored in the file.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape, row-major.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the tensor is one of the floating types shears reads as `f32` (F32, F16, BF16,
    /// F64), and so can prune.
    pub fn is_float(&self) -> bool {
        Float::of(self.dtype).is_some()
    }

    /// Where the tensor's bytes are, as absolute offsets into the file.
    pub fn byte_range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Number of bytes the tensor takes in the file.
    pub fn byte_len(&self) -> usize {
        // The range was checked against the file and against shape × dtype size, both of which
        // fit in memory addresses.
        (self.range.end - self.range.start) as usize
    }
}

/// A safetensors file whose header has been read and checked, and whose tensors are read one at
/// a time, so that a checkpoint much larger than memory can be inspected or streamed.
///
/// [`SafetensorsFile::open`] reads only the header and checks every offset and length against
/// the real size of the file: a corrupt or truncated file is an [`Error::InvalidFile`] there,
/// and later reads cannot run past the data.
///
/// ```
/// use ndarray::array;
/// use shears::io::{Dtype, SafetensorsFile, save_tensors};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.safetensors");
/// let w = array![[1.0_f32, -2.0], [0.5, 4.0]].into_dyn();
/// save_tensors(&path, [("fc.weight", w.view(), Dtype::F16)], None)?;
///
/// let file = SafetensorsFile::open(&path)?;
/// let entry = file.tensor("fc.weight").unwrap();
/// assert_eq!((entry.dtype(), entry.shape(), entry.byte_len()), (Dtype::F16, &[2, 2][..], 8));
/// assert_eq!(file.read_f32("fc.weight")?, w);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    // Reads seek a shared handle; the lock keeps concurrent reads from interleaving.
    file: Mutex<File>,
    entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
    metadata: Option<HashMap<String, String>>,
}

impl SafetensorsFile {
    /// Opens `path` and reads and checks its header, but none of its tensor data.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be opened or read; [`Error::InvalidFile`] when it is
    /// not a valid safetensors file: shorter than its header says, a header that is not JSON or
    /// not a safetensors header, tensors whose offsets overlap, leave gaps or run past the end,
    /// whose byte length does not match shape and dtype, or bytes after the last tensor.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let invalid = |reason: String| Error::InvalidFile {
            path: path.to_path_buf(),
            reason,
        };

        let mut file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        if file_len < 8 {
            return Err(invalid(format!(
                "{file_len} bytes is too short for the 8-byte header length"
            )));
        }
        let mut len = [0; 8];
        file.read_exact(&mut len).map_err(io)?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER_LEN {
            return Err(invalid(format!(
                "header length {header_len} exceeds the limit of {MAX_HEADER_LEN} bytes"
            )));
        }
        if header_len > file_len - 8 {
            return Err(invalid(format!(
                "header length {header_len} runs past the end of the file ({file_len} bytes)"
            )));
        }
        let mut header = vec![0; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let (metadata, infos) = parse_header(&header).map_err(invalid)?;

        let data_start = 8 + header_len;
        let data_len = infos.last().map_or(0, |(_, info)| info.data_offsets.1);
        if data_start.checked_add(data_len as u64) != Some(file_len) {
            return Err(invalid(format!(
                "the header places {data_len} bytes of tensor data after byte {data_start}, \
                 but the file has {file_len} bytes"
            )));
        }

        let entries: Vec<TensorEntry> = infos
            .into_iter()
            .map(|(name, info)| TensorEntry {
                name,
                dtype: info.dtype,
                shape: info.shape,
                range: data_start + info.data_offsets.0 as u64
                    ..data_start + info.data_offsets.1 as u64,
            })
            .collect();
        let index = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            entries,
            index,
            metadata,
        })
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor, in the order of its data in the file.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// The file's `__metadata__` map (string keys and values), `None` when the header has none.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// The bytes of tensor `name` exactly as stored (little-endian, row-major), for any dtype.
    ///
    /// # Errors
    /// [`Error::UnknownTensor`]; [`Error::Io`] when the read fails (the file shrank, say).
    pub fn read_bytes(&self, name: &str) -> Result<Vec<u8>> {
        self.read_entry_bytes(self.entry(name)?)
    }

    /// Tensor `name` converted to `f32`: exact for `F32`, `F16` and `BF16`; `F64` is rounded to
    /// the nearest `f32` (values beyond its range become infinite). Non-finite values are passed
    /// through: use [`SafetensorsFile::read_f32_checked`] to reject them.
    ///
    /// Memory: the result plus a fixed 1 MiB buffer; the stored bytes are never held whole.
    ///
    /// # Errors
    /// [`Error::UnknownTensor`]; [`Error::UnsupportedDtype`] for a dtype other than `F32`,
    /// `F16`, `BF16` and `F64`; [`Error::Io`] when the read fails.
    pub fn read_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        let entry = self.entry(name)?;
        let float = Float::require(entry.dtype, name)?;
        let byte_len = entry.byte_len();
        let mut values = Vec::with_capacity(entry.len());
        let mut chunk = vec![0; CHUNK.min(byte_len)];
        let mut file = self.seek_to(entry.range.start)?;
        let mut left = byte_len;
        while left > 0 {
            let n = left.min(chunk.len());
            file.read_exact(&mut chunk[..n])
                .map_err(|e| Error::io(&self.path, e))?;
            float.decode_extend(&chunk[..n], &mut values);
            left -= n;
        }
        to_array(&entry.shape, values)
    }

    /// As [`SafetensorsFile::read_f32`], but a NaN or infinity (after conversion to `f32`) is
    /// an error, so that a damaged checkpoint is reported before anything is computed from it.
    ///
    /// # Errors
    /// As [`SafetensorsFile::read_f32`], and [`Error::NonFinite`] naming the tensor and the
    /// flat index of the first bad value.
    pub fn read_f32_checked(&self, name: &str) -> Result<ArrayD<f32>> {
        let values = self.read_f32(name)?;
        check_finite(name, &values)?;
        Ok(values)
    }

    fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensor(name).ok_or_else(|| Error::UnknownTensor {
            name: name.to_string(),
        })
    }

    pub(crate) fn read_entry_bytes(&self, entry: &TensorEntry) -> Result<Vec<u8>> {
        let mut bytes = vec![0; entry.byte_len()];
        self.seek_to(entry.range.start)?
            .read_exact(&mut bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(bytes)
    }

    fn lock(&self) -> MutexGuard<'_, File> {
        // No read panics while holding the lock, and a seek comes before every read, so a
        // poisoned lock still guards a usable handle.
        self.file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn seek_to(&self, offset: u64) -> Result<MutexGuard<'_, File>> {
        let mut file = self.lock();
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(file)
    }

    /// Whether `other` is this very file (through hard or symbolic links too). A path that does
    /// not exist is not.
    pub(crate) fn is_same_file(&self, other: &Path) -> Result<bool> {
        let Ok(other) = same_file::Handle::from_path(other) else {
            return Ok(false);
        };
        let this = self
            .lock()
            .try_clone()
            .and_then(same_file::Handle::from_file)
            .map_err(|e| Error::io(&self.path, e))?;
        Ok(this == other)
    }
}

pub(crate) fn to_array(shape: &[usize], values: Vec<f32>) -> Result<ArrayD<f32>> {
    let len = values.len();
    ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|_| Error::ShapeMismatch {
        name: "tensor".into(),
        expected: shape.to_vec(),
        got: vec![len],
    })
}

/// A parsed header: the `__metadata__` map and the tensors sorted by offset.
type Header = (Option<HashMap<String, String>>, Vec<(String, TensorInfo)>);

/// Parses and checks a header. The tensor entries are decoded with the safetensors crate's own
/// `TensorInfo` and `Dtype`; the layout checks are the ones its `Metadata` makes (contiguous
/// offsets from 0, byte length = elements × dtype size, whole bytes), done here because its
/// errors do not say which tensor is at fault.
fn parse_header(header: &[u8]) -> Result<Header, String> {
    let mut fields: HashMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("invalid header: {e}"))?;
    let metadata = fields
        .remove("__metadata__")
        .map(serde_json::from_value::<HashMap<String, String>>)
        .transpose()
        .map_err(|e| format!("invalid __metadata__ (a map of strings to strings): {e}"))?;
    let mut tensors = fields
        .into_iter()
        .map(
            |(name, value)| match serde_json::from_value::<TensorInfo>(value) {
                Ok(info) => Ok((name, info)),
                Err(e) => Err(format!("invalid entry for tensor `{name}`: {e}")),
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    tensors.sort_by(|(a, x), (b, y)| x.data_offsets.cmp(&y.data_offsets).then(a.cmp(b)));

    let mut end = 0;
    for (name, info) in &tensors {
        let (start, stop) = info.data_offsets;
        if start != end || stop < start {
            return Err(format!(
                "tensor `{name}` has data offsets [{start}, {stop}], expected it to start at {end} \
                 (tensors must follow one another without gaps or overlaps)"
            ));
        }
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()))
            .ok_or_else(|| format!("tensor `{name}`: shape {:?} is too large", info.shape))?;
        if bits % 8 != 0 || bits / 8 != stop - start {
            return Err(format!(
                "tensor `{name}`: {} {:?} needs {bits} bits but its data offsets hold {} bytes",
                info.dtype,
                info.shape,
                stop - start
            ));
        }
        end = stop;
    }
    Ok((metadata, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::handmade;
    use std::io::Write;

    fn write(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("t.safetensors");
        File::create(&path).unwrap().write_all(bytes).unwrap();
        path
    }

    fn open_bytes(bytes: &[u8]) -> Result<SafetensorsFile> {
        let dir = tempfile::tempdir().unwrap();
        SafetensorsFile::open(write(dir.path(), bytes))
    }

    fn reason(bytes: &[u8]) -> String {
        match open_bytes(bytes) {
            Err(Error::InvalidFile { reason, .. }) => reason,
            other => panic!("expected InvalidFile, got {other:?}"),
        }
    }

    const TWO: &str = r#"{"__metadata__":{"format":"pt"},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"a":{"dtype":"U8","shape":[2,4],"data_offsets":[0,8]}}"#;

    fn two_data() -> Vec<u8> {
        let mut data: Vec<u8> = (1..=8).collect();
        data.extend(1.5_f32.to_le_bytes());
        data.extend((-2.0_f32).to_le_bytes());
        data
    }

    #[test]
    fn lists_in_file_order_and_reads_one_tensor() {
        let file = open_bytes(&handmade(TWO, &two_data())).unwrap();
        let names: Vec<_> = file.tensors().iter().map(TensorEntry::name).collect();
        assert_eq!(names, ["a", "b"], "data order, not header order");
        let header_end = 8 + TWO.len().next_multiple_of(8) as u64;
        let b = file.tensor("b").unwrap();
        assert_eq!(b.byte_range(), header_end + 8..header_end + 16);
        assert_eq!((b.len(), b.byte_len(), b.shape()), (2, 8, &[2][..]));
        assert_eq!(
            file.read_f32("b").unwrap().as_slice().unwrap(),
            &[1.5, -2.0]
        );
        assert_eq!(file.read_bytes("a").unwrap(), (1..=8).collect::<Vec<u8>>());
        assert_eq!(file.metadata().unwrap()["format"], "pt");
        assert!(matches!(
            file.read_f32("a"),
            Err(Error::UnsupportedDtype { tensor, dtype }) if tensor == "a" && dtype == "U8"
        ));
        assert!(matches!(file.read_bytes("c"), Err(Error::UnknownTensor { name }) if name == "c"));
    }

    #[test]
    fn reads_longer_than_one_chunk() {
        let n = CHUNK / 2 + 3; // f64: 4 chunks and a bit
        let values: Vec<f64> = (0..n).map(|i| i as f64 * 0.25).collect();
        let data: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        let header = format!(
            r#"{{"w":{{"dtype":"F64","shape":[{n}],"data_offsets":[0,{}]}}}}"#,
            data.len()
        );
        let file = open_bytes(&handmade(&header, &data)).unwrap();
        let read = file.read_f32("w").unwrap();
        assert_eq!(read.len(), n);
        assert!(read.iter().zip(&values).all(|(&a, &b)| a == b as f32));
    }

    #[test]
    fn checked_read_names_the_first_non_finite_value() {
        let mut data: Vec<u8> = [0x00, 0x3C, 0x00, 0x7C, 0x00, 0x7E].to_vec(); // 1, inf, NaN
        data.extend([0; 2]);
        let header = r#"{"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]}}"#;
        let file = open_bytes(&handmade(header, &data)).unwrap();
        assert!(file.read_f32("h").unwrap()[1].is_infinite());
        let err = file.read_f32_checked("h").unwrap_err();
        assert_eq!(
            err.to_string(),
            "non-finite value inf in `h` at flat index 1"
        );
    }

    #[test]
    fn empty_file_and_zero_sized_tensors_are_valid() {
        let file = open_bytes(&handmade("{}", &[])).unwrap();
        assert!(file.tensors().is_empty() && file.metadata().is_none());
        let header = r#"{"e":{"dtype":"F32","shape":[0,3],"data_offsets":[0,0]}}"#;
        let file = open_bytes(&handmade(header, &[])).unwrap();
        assert_eq!(file.read_f32("e").unwrap().shape(), &[0, 3]);
        // A scalar has shape [] and one element.
        let header = r#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#;
        let file = open_bytes(&handmade(header, &2.5_f32.to_le_bytes())).unwrap();
        assert_eq!(
            file.read_f32("s").unwrap().into_iter().collect::<Vec<_>>(),
            [2.5]
        );
    }

    #[test]
    fn rejects_bad_lengths() {
        let good = handmade(TWO, &two_data());
        assert!(reason(&[1, 2, 3]).contains("too short"));
        let mut past = good.clone();
        past[..8].copy_from_slice(&(good.len() as u64 - 7).to_le_bytes());
        assert!(reason(&past).contains("runs past the end"));
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(reason(&huge).contains("exceeds the limit"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(reason(&trailing).contains("the file has"));
        assert!(reason(&good[..good.len() - 1]).contains("the file has"));
    }

    #[test]
    fn every_truncation_is_a_clean_error() {
        let good = handmade(TWO, &two_data());
        for cut in 0..good.len() {
            assert!(
                matches!(open_bytes(&good[..cut]), Err(Error::InvalidFile { .. })),
                "cut at {cut}"
            );
        }
        assert!(open_bytes(&good).is_ok());
    }

    #[test]
    fn rejects_bad_headers() {
        let cases = [
            ("not json at all", "invalid header"),
            (r#"[1, 2]"#, "invalid header"),
            (r#"{"__metadata__":{"n":3}}"#, "invalid __metadata__"),
            (
                r#"{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#,
                "tensor `a`",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
                "tensor `a`",
            ),
            (r#"{"a":{"dtype":"F32","shape":[1]}}"#, "tensor `a`"),
            // Overlap, gap, and reversed offsets.
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                "tensor `b` has data offsets [2, 6], expected it to start at 4",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#,
                "start at 0",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}}"#,
                "tensor `a`",
            ),
            // Shape and byte length disagree.
            (
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,6]}}"#,
                "tensor `a`: F32 [2] needs 64 bits but its data offsets hold 6 bytes",
            ),
            (
                r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#,
                "tensor `a`",
            ),
            (
                r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                "too large",
            ),
        ];
        for (header, expected) in cases {
            let r = reason(&handmade(header, &[0; 6]));
            assert!(r.contains(expected), "{header}: {r}");
        }
        // Offsets past the end of the data.
        let r = reason(&handmade(
            r#"{"a":{"dtype":"U8","shape":[64],"data_offsets":[0,64]}}"#,
            &[0; 8],
        ));
        assert!(r.contains("64 bytes of tensor data"), "{r}");
        // Not UTF-8.
        let mut bad = handmade(r#"{"a":{}}"#, &[]);
        bad[10] = 0xFF;
        assert!(reason(&bad).contains("invalid header"));
    }

    #[test]
    fn a_file_that_shrinks_after_open_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), &handmade(TWO, &two_data()));
        let file = SafetensorsFile::open(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 4)
            .unwrap();
        assert!(matches!(file.read_f32("b"), Err(Error::Io { .. })));
        assert!(
            file.read_bytes("a").is_ok(),
            "data before the cut still reads"
        );
    }

    #[test]
    fn missing_file_is_an_io_error_naming_the_path() {
        let err = SafetensorsFile::open("/nonexistent/x.safetensors").unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/x.safetensors"));
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever bytes are changed, opening never panics, and a file that opens reads
            /// every tensor without error.
            #[test]
            fn mutated_files_never_panic(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
                cut in any::<prop::sample::Index>(),
                truncate in any::<bool>(),
            ) {
                let mut bytes = handmade(TWO, &two_data());
                for (at, value) in edits {
                    let i = at.index(bytes.len());
                    bytes[i] = value;
                }
                if truncate {
                    bytes.truncate(cut.index(bytes.len()));
                }
                if let Ok(file) = open_bytes(&bytes) {
                    for entry in file.tensors() {
                        let raw = file.read_bytes(entry.name()).unwrap();
                        prop_assert_eq!(raw.len(), entry.byte_len());
                        if Float::of(entry.dtype()).is_some() {
                            prop_assert_eq!(file.read_f32(entry.name()).unwrap().len(), entry.len());
                        }
                    }
                }
            }
        }
    }
}
