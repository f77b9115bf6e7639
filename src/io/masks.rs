//! Masks files: a safetensors file with one `U8` tensor per masked parameter, same name and
//! shape, 1 = kept and 0 = pruned.

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;

use super::codec::unsupported;
use super::file::SafetensorsFile;
use super::write::{Bytes, Outgoing, write_atomic};
use crate::error::{Error, Result};
use crate::mask::{Mask, MaskSet};

/// Writes `masks` as a masks file: one `U8` tensor per mask, same name and shape, 1 = kept,
/// with `metadata` as the file's `__metadata__`. Written atomically, one mask at a time.
///
/// In PyTorch, `mask = load_file(path)["fc.weight"].bool()` gives the mask back, and
/// `torch.nn.utils.prune.custom_from_mask(module, "weight", mask)` applies it.
///
/// ```
/// use shears::io::{load_masks, save_masks};
/// use shears::{Mask, MaskSet};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("masks.safetensors");
/// let mut masks = MaskSet::new();
/// masks.insert("fc.weight", Mask::from_vec(&[2, 2], vec![true, false, false, true])?);
/// save_masks(&path, &masks, None)?;
/// assert_eq!(load_masks(&path)?, masks);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Io`] when writing fails.
pub fn save_masks(
    path: impl AsRef<Path>,
    masks: &MaskSet,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tensors = masks
        .iter()
        .map(|(name, mask)| Outgoing {
            name: name.to_string(),
            dtype: Dtype::U8,
            shape: mask.shape().to_vec(),
            bytes: Bytes::Flags(mask),
        })
        .collect();
    write_atomic(path.as_ref(), tensors, metadata)
}

/// Reads a masks file: every tensor must be `U8` or `BOOL` and hold only 0 (pruned) and 1
/// (kept). Such files come from [`save_masks`] or from PyTorch (`weight_mask` buffers saved as
/// `uint8` or `bool`).
///
/// # Errors
/// As [`SafetensorsFile::open`]; [`Error::UnsupportedDtype`] for a tensor of another dtype;
/// [`Error::InvalidFile`] naming the tensor and the flat index of the first value other than 0
/// and 1.
pub fn load_masks(path: impl AsRef<Path>) -> Result<MaskSet> {
    let file = SafetensorsFile::open(path)?;
    let mut masks = MaskSet::new();
    for entry in file.tensors() {
        let name = entry.name();
        if !matches!(entry.dtype(), Dtype::U8 | Dtype::BOOL) {
            return Err(unsupported(name, entry.dtype()));
        }
        let flags = file.read_bytes(name)?;
        if let Some((index, value)) = flags.iter().enumerate().find(|(_, v)| **v > 1) {
            return Err(Error::InvalidFile {
                path: file.path().to_path_buf(),
                reason: format!(
                    "mask `{name}` holds {value} at flat index {index}; a mask holds 0 (pruned) or 1 (kept)"
                ),
            });
        }
        let mask = Mask::from_vec(entry.shape(), flags.into_iter().map(|v| v == 1).collect())?;
        masks.insert(name, mask);
    }
    Ok(masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::test_util::handmade;

    fn write(dir: &Path, header: &str, data: &[u8]) -> std::path::PathBuf {
        let path = dir.join("m.safetensors");
        std::fs::write(&path, handmade(header, data)).unwrap();
        path
    }

    #[test]
    fn saved_masks_are_u8_zero_one_with_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let masks: MaskSet = [
            ("a", Mask::from_vec(&[3], vec![true, false, true]).unwrap()),
            ("b", Mask::from_vec(&[1, 2], vec![false, false]).unwrap()),
        ]
        .into_iter()
        .collect();
        let meta: HashMap<_, _> = [("sparsity".to_string(), "0.6".to_string())].into();
        save_masks(&path, &masks, Some(meta.clone())).unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        assert_eq!(file.tensor("a").unwrap().dtype(), Dtype::U8);
        assert_eq!(file.read_bytes("a").unwrap(), [1, 0, 1]);
        assert_eq!(file.tensor("b").unwrap().shape(), &[1, 2]);
        assert_eq!(file.metadata(), Some(&meta));
        assert_eq!(load_masks(&path).unwrap(), masks);
    }

    #[test]
    fn bool_masks_load() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"w":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,4]}}"#;
        let masks = load_masks(write(dir.path(), header, &[1, 0, 0, 1])).unwrap();
        assert_eq!(
            masks.get("w").unwrap().as_slice(),
            &[true, false, false, true]
        );
    }

    #[test]
    fn values_other_than_zero_and_one_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#;
        let err = load_masks(write(dir.path(), header, &[1, 0, 255, 2])).unwrap_err();
        assert!(
            err.to_string()
                .contains("mask `w` holds 255 at flat index 2"),
            "{err}"
        );
    }

    #[test]
    fn other_dtypes_are_not_masks() {
        let dir = tempfile::tempdir().unwrap();
        let header = r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let err = load_masks(write(dir.path(), header, &1.0_f32.to_le_bytes())).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedDtype { tensor, dtype } if tensor == "w" && dtype == "F32"),
            "{err:?}"
        );
    }
}
