//! Reading and writing safetensors checkpoints and masks files.
//!
//! Floating tensors (`F32`, `F16`, `BF16`, `F64`) are `f32` in memory and are written back in
//! their original dtype; every other tensor (integers, booleans, 8-bit floats...) is carried
//! through byte for byte, as is the file's `__metadata__` map. Two ways in:
//!
//! - [`Checkpoint`] loads a whole file into [`Params`](crate::Params) and saves it back; tensors
//!   whose values did not change keep their exact bytes, `F64` included.
//! - [`SafetensorsFile`] reads only the header and then one tensor at a time, and
//!   [`write_masked`] streams a pruned copy of it: for checkpoints that should never be in
//!   memory twice.
//!
//! Masks files ([`save_masks`], [`load_masks`]) hold one `U8` tensor per masked parameter,
//! 1 = kept. Every write goes to a temporary file in the destination directory that is renamed
//! into place only when complete, so a failure leaves no partial output and never touches the
//! input. Every file is checked against its real size on opening, so a corrupt or truncated
//! file is an [`Error::InvalidFile`](crate::Error::InvalidFile), never a panic.
//!
//! ```
//! use ndarray::array;
//! use shears::io::{Checkpoint, SafetensorsFile, write_masked};
//! use shears::MaskSet;
//!
//! let dir = tempfile::tempdir()?;
//! let (input, output) = (dir.path().join("model.safetensors"), dir.path().join("pruned.safetensors"));
//! let mut ckpt = Checkpoint::new();
//! ckpt.params_mut().insert("fc.weight", array![[0.1_f32, -0.9], [0.8, 0.05]].into_dyn());
//! ckpt.save(&input)?;
//!
//! // Decide from the weights (here: keep |w| > 0.5), then stream the pruned copy.
//! let src = SafetensorsFile::open(&input)?;
//! let params = Checkpoint::load(&input)?.into_params();
//! let mut masks = MaskSet::nonzero(&params);
//! let keep = masks.get_mut("fc.weight").unwrap();
//! for (k, w) in keep.as_slice_mut().iter_mut().zip(params.slice("fc.weight").unwrap()) {
//!     *k = w.abs() > 0.5;
//! }
//! write_masked(&src, &masks, &output)?;
//! assert_eq!(
//!     SafetensorsFile::open(&output)?.read_f32("fc.weight")?,
//!     array![[0.0_f32, -0.9], [0.8, 0.0]].into_dyn()
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod checkpoint;
mod codec;
mod file;
mod masks;
#[cfg(feature = "serde")]
mod network;
mod text;
mod write;

pub use checkpoint::{Checkpoint, RawTensor};
pub use file::{SafetensorsFile, TensorEntry};
pub use masks::{load_masks, save_masks};
#[cfg(feature = "serde")]
pub use network::{load_network, save_network};
pub use safetensors::Dtype;
pub use text::write_text;
pub use write::{save_tensors, write_masked};

#[cfg(test)]
pub(crate) mod test_util {
    /// A safetensors file made by hand: `header` as JSON, padded with spaces to a multiple of 8
    /// bytes as the reference writer pads it, then `data`.
    pub(crate) fn handmade(header: &str, data: &[u8]) -> Vec<u8> {
        let mut header = header.as_bytes().to_vec();
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes.extend(data);
        bytes
    }
}
