//! A whole checkpoint in memory: `f32` parameters plus everything needed to write it back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::Dtype;

use super::codec::Float;
use super::file::{SafetensorsFile, to_array};
use super::write::{Bytes, Outgoing, write_atomic};
use crate::error::{Error, Result};
use crate::params::Params;
use crate::params::check_finite;

/// A tensor shears does not convert (integers, booleans, 8-bit and smaller floats, complex):
/// its bytes as stored, carried through unchanged.
///
/// ```
/// use shears::io::{Dtype, RawTensor};
///
/// let steps = RawTensor::new(Dtype::I64, vec![], 1200_i64.to_le_bytes().to_vec())?;
/// assert_eq!((steps.dtype(), steps.shape(), steps.data().len()), (Dtype::I64, &[][..], 8));
/// assert!(RawTensor::new(Dtype::I64, vec![2], vec![0; 8]).is_err(), "two I64 need 16 bytes");
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    /// A tensor from its little-endian, row-major bytes.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `data` is not exactly the size of `shape` elements of
    /// `dtype`.
    pub fn new(dtype: Dtype, shape: Vec<usize>, data: Vec<u8>) -> Result<Self> {
        let bits = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize()));
        if bits != data.len().checked_mul(8) {
            return Err(Error::invalid(
                "raw tensor",
                format!(
                    "{dtype} {shape:?} does not fit in {} bytes of data",
                    data.len()
                ),
            ));
        }
        Ok(RawTensor { dtype, shape, data })
    }

    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The shape, row-major.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The bytes as stored.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The bytes, by value.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

/// A safetensors checkpoint loaded whole: its floating tensors as `f32` [`Params`], plus what it
/// takes to save it back faithfully (each tensor's dtype, the other tensors, the metadata).
///
/// Saving writes every floating tensor in its original dtype (`F32`, `F16`, `BF16`, `F64`); a
/// tensor whose `f32` values did not change is written with its original bytes, so an `F64`
/// tensor, which `f32` cannot hold exactly, survives a load and save unchanged. Tensors added
/// through [`Checkpoint::params_mut`] are saved as `F32` unless [`Checkpoint::set_dtype`] says
/// otherwise. Non-float tensors and the `__metadata__` map are kept as they were.
///
/// Memory: the `f32` values, plus the original bytes of the tensors whose `f32` values would not
/// encode back to them (`F64` tensors, in practice). For a checkpoint larger than memory, use [`SafetensorsFile`] and
/// [`write_masked`](super::write_masked), which work one tensor at a time.
///
/// ```
/// use ndarray::array;
/// use shears::io::{Checkpoint, Dtype};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.safetensors");
///
/// let mut ckpt = Checkpoint::new();
/// ckpt.params_mut().insert("fc.weight", array![[0.5_f32, -1.0], [2.0, 0.25]].into_dyn());
/// ckpt.set_dtype("fc.weight", Dtype::F16)?;
/// ckpt.metadata_mut().get_or_insert_default().insert("format".into(), "pt".into());
/// ckpt.save(&path)?;
///
/// let mut loaded = Checkpoint::load(&path)?;
/// assert_eq!(loaded.dtype("fc.weight"), Some(Dtype::F16));
/// assert_eq!(loaded.params().slice("fc.weight").unwrap(), &[0.5, -1.0, 2.0, 0.25]);
/// assert_eq!(loaded.metadata().unwrap()["format"], "pt");
///
/// // Prune in memory and save again, still as F16.
/// loaded.params_mut().get_mut("fc.weight").unwrap()[[0, 0]] = 0.0;
/// loaded.save(&path)?;
/// assert_eq!(Checkpoint::load(&path)?.params().slice("fc.weight").unwrap(), &[0.0, -1.0, 2.0, 0.25]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checkpoint {
    params: Params,
    /// The dtype each floating tensor is saved in; absent means `F32`.
    dtypes: HashMap<String, Dtype>,
    /// The bytes a floating tensor was loaded from when re-encoding its `f32` values would not
    /// give them back (`F64` tensors, in practice), written again while they still decode to
    /// its values. `F32` tensors never need them, `F16` and `BF16` ones only for NaN payloads.
    originals: HashMap<String, Vec<u8>>,
    raw: BTreeMap<String, RawTensor>,
    metadata: Option<HashMap<String, String>>,
}

impl Checkpoint {
    /// An empty checkpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads a whole safetensors file. Floating tensors become [`Params`] in the order of their
    /// data in the file; other tensors are kept as [`RawTensor`]s. Values are not checked: call
    /// [`Checkpoint::check_finite`] to reject NaN and infinities.
    ///
    /// # Errors
    /// As [`SafetensorsFile::open`] and [`SafetensorsFile::read_bytes`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let mut ckpt = Checkpoint {
            metadata: file.metadata().cloned(),
            ..Checkpoint::default()
        };
        for entry in file.tensors() {
            let name = entry.name();
            match Float::of(entry.dtype()) {
                // Read in chunks: no second copy of the tensor.
                Some(Float::F32) => {
                    ckpt.params.insert(name, file.read_f32(name)?);
                }
                Some(float) => {
                    let bytes = file.read_entry_bytes(entry)?;
                    let mut values = Vec::with_capacity(entry.len());
                    float.decode_extend(&bytes, &mut values);
                    if !float.encodes_to(&values, &bytes) {
                        ckpt.originals.insert(name.to_string(), bytes);
                    }
                    ckpt.params.insert(name, to_array(entry.shape(), values)?);
                    ckpt.dtypes.insert(name.to_string(), entry.dtype());
                }
                None => {
                    let bytes = file.read_entry_bytes(entry)?;
                    let raw = RawTensor::new(entry.dtype(), entry.shape().to_vec(), bytes)?;
                    ckpt.raw.insert(name.to_string(), raw);
                }
            }
        }
        Ok(ckpt)
    }

    /// Writes the checkpoint to `path`, atomically: on error the destination is left as it was
    /// and no temporary file remains. Each tensor is encoded only when it is written.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when a name is both a parameter and a raw tensor;
    /// [`Error::Io`] when writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut tensors = Vec::with_capacity(self.params.len() + self.raw.len());
        for (name, values) in self.params.iter() {
            let dtype = self.dtypes.get(name).copied().unwrap_or(Dtype::F32);
            tensors.push(Outgoing {
                name: name.to_string(),
                dtype,
                shape: values.shape().to_vec(),
                bytes: Bytes::Values {
                    values: values.view(),
                    float: Float::require(dtype, name)?,
                    original: self.originals.get(name).map(Vec::as_slice),
                },
            });
        }
        for (name, raw) in &self.raw {
            tensors.push(Outgoing {
                name: name.clone(),
                dtype: raw.dtype,
                shape: raw.shape.clone(),
                bytes: Bytes::Stored(&raw.data),
            });
        }
        write_atomic(path.as_ref(), tensors, self.metadata.clone())
    }

    /// The floating tensors, as `f32`.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The floating tensors, to prune, fine-tune or extend.
    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The floating tensors, by value.
    pub fn into_params(self) -> Params {
        self.params
    }

    /// The dtype `name` is saved in: its dtype in the file, `F32` for a parameter added since,
    /// or what [`Checkpoint::set_dtype`] set. `None` when there is no such tensor.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        if self.params.contains(name) {
            Some(self.dtypes.get(name).copied().unwrap_or(Dtype::F32))
        } else {
            self.raw.get(name).map(RawTensor::dtype)
        }
    }

    /// Sets the dtype parameter `name` is saved in.
    ///
    /// # Errors
    /// [`Error::UnknownTensor`] when `name` is not a parameter; [`Error::UnsupportedDtype`] for
    /// a dtype other than `F32`, `F16`, `BF16` and `F64`.
    pub fn set_dtype(&mut self, name: &str, dtype: Dtype) -> Result<()> {
        if !self.params.contains(name) {
            return Err(Error::UnknownTensor {
                name: name.to_string(),
            });
        }
        Float::require(dtype, name)?;
        if self.dtypes.insert(name.to_string(), dtype) != Some(dtype) {
            // Bytes of another format almost never decode to the values: stop holding them.
            self.originals.remove(name);
        }
        Ok(())
    }

    /// The tensor `name` if it is one shears carries through without converting.
    pub fn raw(&self, name: &str) -> Option<&RawTensor> {
        self.raw.get(name)
    }

    /// The tensors shears carries through without converting, in name order.
    pub fn raw_tensors(&self) -> impl ExactSizeIterator<Item = (&str, &RawTensor)> + '_ {
        self.raw.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Adds (or replaces) a tensor carried through without converting, such as an integer step
    /// counter. Its name must not also be a parameter's when the checkpoint is saved.
    pub fn insert_raw(&mut self, name: impl Into<String>, tensor: RawTensor) -> Option<RawTensor> {
        self.raw.insert(name.into(), tensor)
    }

    /// The `__metadata__` map, `None` when the file had none.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.metadata.as_ref()
    }

    /// The `__metadata__` map, to edit. `None` writes no map; `Some` of an empty map writes an
    /// empty one (unless the checkpoint has no tensors at all).
    pub fn metadata_mut(&mut self) -> &mut Option<HashMap<String, String>> {
        &mut self.metadata
    }

    /// Checks that every parameter is finite, so that a damaged checkpoint is reported before
    /// anything is computed from it.
    ///
    /// # Errors
    /// [`Error::NonFinite`] naming the first tensor (in order) with a NaN or infinity, and the
    /// flat index of the first such value in it.
    pub fn check_finite(&self) -> Result<()> {
        self.params
            .iter()
            .try_for_each(|(name, values)| check_finite(name, values))
    }
}

impl From<Params> for Checkpoint {
    /// A checkpoint of `params`, all saved as `F32`, without metadata.
    fn from(params: Params) -> Self {
        Checkpoint {
            params,
            ..Checkpoint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::handmade;
    use ndarray::array;

    /// A file with a precise F64 tensor (not representable in f32), an F16 tensor holding a
    /// signalling NaN, an F32 tensor and an I64 tensor.
    fn mixed(dir: &Path) -> std::path::PathBuf {
        let f64s: Vec<u8> = [0.1_f64, 1.0 / 3.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f16s = [0x01, 0x7C, 0x00, 0x3C]; // sNaN with payload 1, then 1.0
        let f32s: Vec<u8> = [1.5_f32, -0.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let i64s = 7_i64.to_le_bytes();
        let header = r#"{"__metadata__":{"k":"v"},"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"h":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"s":{"dtype":"F32","shape":[2],"data_offsets":[20,28]},"n":{"dtype":"I64","shape":[1],"data_offsets":[28,36]}}"#;
        let data = [&f64s[..], &f16s, &f32s, &i64s].concat();
        let path = dir.join("mixed.safetensors");
        std::fs::write(&path, handmade(header, &data)).unwrap();
        path
    }

    fn bytes_of(path: &Path, name: &str) -> Vec<u8> {
        SafetensorsFile::open(path)
            .unwrap()
            .read_bytes(name)
            .unwrap()
    }

    #[test]
    fn load_and_save_keeps_every_byte_of_unchanged_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let src = mixed(dir.path());
        let ckpt = Checkpoint::load(&src).unwrap();
        assert_eq!(ckpt.params().names().collect::<Vec<_>>(), ["d", "h", "s"]);
        assert_eq!(
            ckpt.params().slice("d").unwrap(),
            &[0.1_f32, (1.0_f64 / 3.0) as f32]
        );
        assert!(ckpt.params().slice("h").unwrap()[0].is_nan());
        assert_eq!(ckpt.dtype("n"), Some(Dtype::I64));
        assert_eq!(ckpt.dtype("h"), Some(Dtype::F16));
        assert_eq!(ckpt.dtype("x"), None);
        assert!(
            matches!(ckpt.check_finite(), Err(Error::NonFinite { tensor, index: 0, .. }) if tensor == "h")
        );

        // Only the F64 tensor needs its bytes kept (and the F16 one for its NaN, if converting
        // it to f32 and back changes it).
        assert!(ckpt.originals.contains_key("d") && !ckpt.originals.contains_key("s"));

        let out = dir.path().join("out.safetensors");
        ckpt.save(&out).unwrap();
        for name in ["d", "h", "s", "n"] {
            assert_eq!(bytes_of(&out, name), bytes_of(&src, name), "{name}");
        }
        let again = SafetensorsFile::open(&out).unwrap();
        assert_eq!(again.metadata().unwrap()["k"], "v");
        assert_eq!(again.tensor("d").unwrap().dtype(), Dtype::F64);
    }

    #[test]
    fn changed_tensors_are_re_encoded_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = mixed(dir.path());
        let mut ckpt = Checkpoint::load(&src).unwrap();
        ckpt.params_mut().get_mut("d").unwrap()[1] = 0.0;
        ckpt.params_mut()
            .insert("new", array![1.0_f32 / 3.0].into_dyn());
        let out = dir.path().join("out.safetensors");
        ckpt.save(&out).unwrap();

        let d = bytes_of(&out, "d");
        let precise = bytes_of(&src, "d");
        // Re-encoded from f32: 0.1 is now the f64 closest to the f32 nearest 0.1.
        assert_eq!(d[..8], f64::from(0.1_f32).to_le_bytes());
        assert_ne!(d[..8], precise[..8]);
        assert_eq!(d[8..], 0.0_f64.to_le_bytes());
        assert_eq!(bytes_of(&out, "h"), bytes_of(&src, "h"));
        let file = SafetensorsFile::open(&out).unwrap();
        assert_eq!(file.tensor("new").unwrap().dtype(), Dtype::F32);
        assert_eq!(file.read_f32("new").unwrap()[0], 1.0 / 3.0);
    }

    #[test]
    fn half_precision_tensors_keep_no_second_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.safetensors");
        let w = array![[0.1_f32, -3.0], [65504.0, 1e-7]].into_dyn();
        let views = [("a", w.view(), Dtype::F16), ("b", w.view(), Dtype::BF16)];
        crate::io::save_tensors(&path, views, None).unwrap();
        let ckpt = Checkpoint::load(&path).unwrap();
        assert!(ckpt.originals.is_empty());
        let out = dir.path().join("out.safetensors");
        ckpt.save(&out).unwrap();
        for name in ["a", "b"] {
            assert_eq!(bytes_of(&out, name), bytes_of(&path, name));
        }
    }

    #[test]
    fn set_dtype_converts_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoint::load(mixed(dir.path())).unwrap();
        ckpt.set_dtype("d", Dtype::BF16).unwrap();
        ckpt.set_dtype("s", Dtype::F64).unwrap();
        assert!(matches!(
            ckpt.set_dtype("n", Dtype::F32),
            Err(Error::UnknownTensor { .. })
        ));
        assert!(matches!(
            ckpt.set_dtype("s", Dtype::I32),
            Err(Error::UnsupportedDtype { .. })
        ));
        let out = dir.path().join("out.safetensors");
        ckpt.save(&out).unwrap();
        let file = SafetensorsFile::open(&out).unwrap();
        assert_eq!(file.tensor("d").unwrap().dtype(), Dtype::BF16);
        // bf16 nearest 0.1 is 0x3DCD (0.10009765625).
        assert_eq!(file.read_bytes("d").unwrap()[..2], [0xCD, 0x3D]);
        assert_eq!(file.read_bytes("s").unwrap()[..8], 1.5_f64.to_le_bytes());
    }

    #[test]
    fn a_name_used_twice_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpt = Checkpoint::from(Params::from_iter([("w", array![1.0_f32].into_dyn())]));
        ckpt.insert_raw("w", RawTensor::new(Dtype::U8, vec![1], vec![1]).unwrap());
        let out = dir.path().join("out.safetensors");
        let err = ckpt.save(&out).unwrap_err();
        assert!(
            err.to_string().contains("`w` appears more than once"),
            "{err}"
        );
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temporary left"
        );
    }
}
