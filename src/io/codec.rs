//! Conversions between the floating dtypes of a file and `f32` in memory.
//!
//! Every element is decoded with `from_le_bytes` on byte chunks, never by reinterpreting the
//! buffer, because files from other writers give no alignment guarantee.

use half::{bf16, f16};
use ndarray::{ArrayRef, IxDyn};
use safetensors::Dtype;

use crate::error::{Error, Result};

/// The floating dtypes shears converts to and from `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
    BF16,
    F64,
}

impl Float {
    /// The float format of `dtype`, or `None` for a dtype shears carries through untouched.
    pub(crate) fn of(dtype: Dtype) -> Option<Float> {
        match dtype {
            Dtype::F32 => Some(Float::F32),
            Dtype::F16 => Some(Float::F16),
            Dtype::BF16 => Some(Float::BF16),
            Dtype::F64 => Some(Float::F64),
            _ => None,
        }
    }

    /// As [`Float::of`], with [`Error::UnsupportedDtype`] naming `tensor` for other dtypes.
    pub(crate) fn require(dtype: Dtype, tensor: &str) -> Result<Float> {
        Float::of(dtype).ok_or_else(|| unsupported(tensor, dtype))
    }

    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            Float::F16 | Float::BF16 => 2,
            Float::F32 => 4,
            Float::F64 => 8,
        }
    }

    /// Appends the values of the little-endian elements in `bytes` to `out`. A trailing partial
    /// element (which validated tensors never have) is ignored.
    pub(crate) fn decode_extend(self, bytes: &[u8], out: &mut Vec<f32>) {
        match self {
            Float::F32 => out.extend(
                bytes
                    .as_chunks::<4>()
                    .0
                    .iter()
                    .map(|b| f32::from_le_bytes(*b)),
            ),
            Float::F16 => out.extend(
                bytes
                    .as_chunks::<2>()
                    .0
                    .iter()
                    .map(|b| f16::from_le_bytes(*b).to_f32()),
            ),
            Float::BF16 => out.extend(
                bytes
                    .as_chunks::<2>()
                    .0
                    .iter()
                    .map(|b| bf16::from_le_bytes(*b).to_f32()),
            ),
            // Rounds to nearest, ties to even; magnitudes beyond f32's range become ±inf.
            Float::F64 => out.extend(
                bytes
                    .as_chunks::<8>()
                    .0
                    .iter()
                    .map(|b| f64::from_le_bytes(*b) as f32),
            ),
        }
    }

    /// Appends the little-endian encoding of `values` to `out`, rounding to nearest, ties to
    /// even, for the narrower formats.
    pub(crate) fn encode_extend(self, values: impl Iterator<Item = f32>, out: &mut Vec<u8>) {
        match self {
            Float::F32 => out.extend(values.flat_map(f32::to_le_bytes)),
            Float::F16 => out.extend(values.flat_map(|x| f16::from_f32(x).to_le_bytes())),
            Float::BF16 => out.extend(values.flat_map(|x| bf16::from_f32(x).to_le_bytes())),
            Float::F64 => out.extend(values.flat_map(|x| f64::from(x).to_le_bytes())),
        }
    }

    /// Whether `bytes` decode to exactly the bit patterns of `values` (row-major), so that the
    /// bytes can be written again instead of re-encoding `values`, which loses precision for
    /// `F64` and may change NaN payloads.
    pub(crate) fn decodes_to(self, bytes: &[u8], values: &ArrayRef<f32, IxDyn>) -> bool {
        if bytes.len() != values.len() * self.size() {
            return false;
        }
        // Decode a block at a time into one small buffer: no copy of the whole tensor.
        let mut decoded = Vec::with_capacity(BLOCK);
        let mut values = values.iter();
        for block in bytes.chunks(BLOCK * self.size()) {
            decoded.clear();
            self.decode_extend(block, &mut decoded);
            if !decoded
                .iter()
                .zip(values.by_ref())
                .all(|(a, b)| a.to_bits() == b.to_bits())
            {
                return false;
            }
        }
        true
    }

    /// Whether encoding `values` gives back exactly `bytes`: then the bytes need not be kept to
    /// write the tensor again unchanged. True of every `F32` tensor and of `F16` and `BF16`
    /// tensors without NaN payloads that `f32` conversion changes; rarely of `F64` ones.
    pub(crate) fn encodes_to(self, values: &[f32], bytes: &[u8]) -> bool {
        if bytes.len() != values.len() * self.size() {
            return false;
        }
        let mut encoded = Vec::with_capacity(BLOCK * self.size());
        values
            .chunks(BLOCK)
            .zip(bytes.chunks(BLOCK * self.size()))
            .all(|(values, bytes)| {
                encoded.clear();
                self.encode_extend(values.iter().copied(), &mut encoded);
                encoded == bytes
            })
    }
}

/// Elements converted at a time when comparing a tensor with bytes.
const BLOCK: usize = 4096;

/// [`Error::UnsupportedDtype`] for `tensor`.
pub(crate) fn unsupported(tensor: &str, dtype: Dtype) -> Error {
    Error::UnsupportedDtype {
        tensor: tensor.to_string(),
        dtype: dtype.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::ArrayD;

    fn decode(f: Float, bytes: &[u8]) -> Vec<f32> {
        let mut out = Vec::new();
        f.decode_extend(bytes, &mut out);
        out
    }

    fn encode(f: Float, values: &[f32]) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode_extend(values.iter().copied(), &mut out);
        out
    }

    #[test]
    fn known_bit_patterns() {
        // 1.0 and -2.0 written out by hand from the IEEE 754 / bfloat16 layouts.
        assert_eq!(encode(Float::F16, &[1.0, -2.0]), [0x00, 0x3C, 0x00, 0xC0]);
        assert_eq!(encode(Float::BF16, &[1.0, -2.0]), [0x80, 0x3F, 0x00, 0xC0]);
        assert_eq!(encode(Float::F32, &[1.0]), [0x00, 0x00, 0x80, 0x3F]);
        assert_eq!(encode(Float::F64, &[1.0]), [0, 0, 0, 0, 0, 0, 0xF0, 0x3F]);
        assert_eq!(decode(Float::F16, &[0x00, 0x3C, 0x00, 0xC0]), [1.0, -2.0]);
        assert_eq!(decode(Float::BF16, &[0x80, 0x3F, 0x00, 0xC0]), [1.0, -2.0]);
        // f16 max and the smallest f16 subnormal, 2^-24.
        assert_eq!(
            decode(Float::F16, &[0xFF, 0x7B, 0x01, 0x00]),
            [65504.0, 2f32.powi(-24)]
        );
    }

    #[test]
    fn narrowing_rounds_to_nearest_even() {
        // 1 + 2^-11 lies halfway between f16 1.0 and 1 + 2^-10: ties go to the even 1.0.
        assert_eq!(encode(Float::F16, &[1.0 + 2f32.powi(-11)]), [0x00, 0x3C]);
        // 1 + 3·2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(
            encode(Float::F16, &[1.0 + 3.0 * 2f32.powi(-11)]),
            [0x02, 0x3C]
        );
        // bf16 stores 7 mantissa bits: 1 + 2^-8 is a tie, goes to 1.0.
        assert_eq!(encode(Float::BF16, &[1.0 + 2f32.powi(-8)]), [0x80, 0x3F]);
        // f64 0.1 narrows to the f32 nearest 0.1.
        assert_eq!(decode(Float::F64, &0.1_f64.to_le_bytes()), [0.1_f32]);
        assert_eq!(
            decode(Float::F64, &1e300_f64.to_le_bytes()),
            [f32::INFINITY]
        );
    }

    #[test]
    fn decodes_to_compares_bit_patterns() {
        let values = ArrayD::from_shape_vec(vec![3], vec![0.1_f32, -0.0, 3.0]).unwrap();
        let bytes = encode(Float::F64, &[0.1, -0.0, 3.0]);
        assert!(Float::F64.decodes_to(&bytes, &values));
        // 0.0 and -0.0 compare equal as floats but are different values to keep.
        let plus_zero = encode(Float::F64, &[0.1, 0.0, 3.0]);
        assert!(!Float::F64.decodes_to(&plus_zero, &values));
        // A precise f64 that narrows to the same f32 still "decodes to" it.
        let mut precise = 0.1_f64.to_le_bytes().to_vec();
        precise.extend(encode(Float::F64, &[-0.0, 3.0]));
        assert!(Float::F64.decodes_to(&precise, &values));
        assert!(
            !Float::F64.decodes_to(&bytes[..16], &values),
            "length differs"
        );
        // Longer than one block, with the difference in the last one.
        let long = ArrayD::from_shape_vec(vec![10_000], vec![1.0_f32; 10_000]).unwrap();
        let mut bytes = encode(Float::F16, &vec![1.0; 10_000]);
        assert!(Float::F16.decodes_to(&bytes, &long));
        bytes[19_999] ^= 0x80;
        assert!(!Float::F16.decodes_to(&bytes, &long));
    }

    #[test]
    fn encodes_to_tells_whether_bytes_must_be_kept() {
        let values = [0.1_f32, -0.0, 65504.0];
        for f in [Float::F32, Float::F16, Float::BF16, Float::F64] {
            let bytes = encode(f, &values);
            assert!(f.encodes_to(&decode(f, &bytes), &bytes), "{f:?}");
        }
        // f64 0.1 is not the f64 of any f32.
        let precise = 0.1_f64.to_le_bytes();
        assert!(!Float::F64.encodes_to(&decode(Float::F64, &precise), &precise));
        assert!(!Float::F32.encodes_to(&[1.0], &[0; 8]), "length differs");
        // Across blocks, with the difference in the last one.
        let long = vec![1.5_f32; 10_000];
        let mut bytes = encode(Float::BF16, &long);
        assert!(Float::BF16.encodes_to(&long, &bytes));
        bytes[19_998] ^= 1;
        assert!(!Float::BF16.encodes_to(&long, &bytes));
    }

    #[test]
    fn only_the_four_float_dtypes_convert() {
        for d in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
            assert!(Float::of(d).is_some());
        }
        for d in [
            Dtype::I64,
            Dtype::U8,
            Dtype::BOOL,
            Dtype::F8_E4M3,
            Dtype::C64,
        ] {
            assert!(Float::of(d).is_none());
        }
        let err = Float::require(Dtype::I64, "steps").unwrap_err();
        assert_eq!(
            err.to_string(),
            "tensor `steps` has dtype I64, which shears cannot use here"
        );
    }
}
