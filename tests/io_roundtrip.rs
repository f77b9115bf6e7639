//! Safetensors I/O end to end: round trips for every dtype and layout, byte-exact carrying of
//! untouched tensors, masked copies, files written by Python's `safetensors`, and atomic writes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use shears::io::{
    Checkpoint, Dtype, SafetensorsFile, load_masks, save_masks, save_tensors, write_masked,
};
use shears::{Error, Mask, MaskSet};

const FLOATS: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn size_of(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

/// What `x` becomes once stored as `dtype` and read back, computed with `half` and `as` rather
/// than with shears' own codec.
fn stored(dtype: Dtype, x: f32) -> f32 {
    match dtype {
        Dtype::F32 => x,
        Dtype::F16 => f16::from_f32(x).to_f32(),
        Dtype::BF16 => bf16::from_f32(x).to_f32(),
        Dtype::F64 => f64::from(x) as f32,
        other => panic!("not a float dtype: {other}"),
    }
}

fn bits(values: impl IntoIterator<Item = f32>) -> Vec<u32> {
    values.into_iter().map(f32::to_bits).collect()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A tensor given by its stored bytes.
#[derive(Clone, Debug)]
struct Raw {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Writes `tensors` with the safetensors crate's own writer: the reference shears must read.
fn write_reference(path: &Path, tensors: &[Raw], metadata: Option<HashMap<String, String>>) {
    let views = tensors.iter().map(|t| {
        let view = TensorView::new(t.dtype, t.shape.clone(), &t.bytes).unwrap();
        (t.name.clone(), view)
    });
    safetensors::serialize_to_file(views, metadata, path).unwrap();
}

fn metadata_strategy() -> impl Strategy<Value = Option<HashMap<String, String>>> {
    prop::option::of(prop::collection::hash_map(
        "[a-z_.]{1,8}",
        any::<String>(),
        0..4,
    ))
}

/// Tensors of random dtype (floats, integers, bytes), shape (scalars and empty ones included)
/// and arbitrary bytes: every bit pattern, NaN payloads and subnormals included.
fn raw_tensors() -> impl Strategy<Value = Vec<Raw>> {
    let dtype = prop::sample::select(vec![
        Dtype::F32,
        Dtype::F16,
        Dtype::BF16,
        Dtype::F64,
        Dtype::I64,
        Dtype::I32,
        Dtype::U8,
    ]);
    let tensor =
        (dtype, prop::collection::vec(0..5usize, 0..=3)).prop_flat_map(|(dtype, shape)| {
            let n = shape.iter().product::<usize>() * size_of(dtype);
            prop::collection::vec(any::<u8>(), n)
                .prop_map(move |bytes| (dtype, shape.clone(), bytes))
        });
    prop::collection::vec(tensor, 1..6).prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .map(|(i, (dtype, shape, bytes))| Raw {
                name: format!("layer{i}.weight"),
                dtype,
                shape,
                bytes,
            })
            .collect()
    })
}

/// How an array is laid out in memory before it is written.
#[derive(Clone, Copy, Debug)]
enum Layout {
    Standard,
    /// All axes reversed: a transposed matrix.
    Transposed,
    /// Every other row, and the last axis read backwards.
    Stepped,
    /// Every axis inverted (negative strides).
    Inverted,
}

fn arrange(base: &ArrayD<f32>, layout: Layout) -> ArrayViewD<'_, f32> {
    match layout {
        Layout::Standard => base.view(),
        Layout::Transposed => base.view().reversed_axes(),
        Layout::Stepped => {
            let last = base.ndim() - 1;
            base.slice_each_axis(|ax| match ax.axis.index() {
                0 => Slice::new(0, None, 2),
                i if i == last => Slice::new(0, None, -1),
                _ => Slice::from(..),
            })
        }
        Layout::Inverted => {
            let mut v = base.view();
            for axis in 0..v.ndim() {
                v.invert_axis(Axis(axis));
            }
            v
        }
    }
}

fn float_arrays() -> impl Strategy<Value = Vec<(ArrayD<f32>, Dtype, Layout)>> {
    let layout = prop::sample::select(vec![
        Layout::Standard,
        Layout::Transposed,
        Layout::Stepped,
        Layout::Inverted,
    ]);
    let array = prop::collection::vec(1..6usize, 1..=3).prop_flat_map(|shape| {
        let n = shape.iter().product::<usize>();
        prop::collection::vec(prop::num::f32::ANY, n)
            .prop_map(move |v| ArrayD::from_shape_vec(IxDyn(&shape), v).unwrap())
    });
    prop::collection::vec((array, prop::sample::select(FLOATS.to_vec()), layout), 1..5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// save then load is the identity up to the conversion to each dtype (exact for F32, and
    /// for F64 since f32 → f64 is exact), in every layout, and keeps the metadata.
    #[test]
    fn save_then_load_is_identity_for_every_dtype_and_layout(
        arrays in float_arrays(),
        metadata in metadata_strategy(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let views: Vec<_> = arrays.iter().map(|(a, d, l)| (arrange(a, *l), *d)).collect();
        save_tensors(
            &path,
            views.iter().enumerate().map(|(i, (v, d))| (format!("t{i}"), v.view(), *d)),
            metadata.clone(),
        )
        .unwrap();

        let file = SafetensorsFile::open(&path).unwrap();
        prop_assert_eq!(file.metadata(), metadata.as_ref());
        let ckpt = Checkpoint::load(&path).unwrap();
        prop_assert_eq!(ckpt.metadata(), metadata.as_ref());
        for (i, (view, dtype)) in views.iter().enumerate() {
            let name = format!("t{i}");
            let expected: Vec<f32> = view.iter().map(|&x| stored(*dtype, x)).collect();
            if matches!(dtype, Dtype::F32 | Dtype::F64) {
                prop_assert_eq!(bits(expected.iter().copied().filter(|x| !x.is_nan())),
                                bits(view.iter().copied().filter(|x| !x.is_nan())));
            }
            let read = file.read_f32(&name).unwrap();
            prop_assert_eq!(read.shape(), view.shape());
            prop_assert_eq!(bits(read.iter().copied()), bits(expected.iter().copied()));
            prop_assert_eq!(ckpt.dtype(&name), Some(*dtype));
            prop_assert_eq!(bits(ckpt.params().slice(&name).unwrap().iter().copied()), bits(expected));
        }
    }

    /// Loading and saving a checkpoint keeps the bytes of every tensor it did not change,
    /// whatever they hold; a changed tensor is re-encoded and the others stay as they were.
    #[test]
    fn load_and_save_keeps_untouched_tensors_byte_identical(
        tensors in raw_tensors(),
        metadata in metadata_strategy(),
        change in any::<prop::sample::Index>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
        write_reference(&input, &tensors, metadata.clone());

        let mut ckpt = Checkpoint::load(&input).unwrap();
        // Change the first element of one non-empty floating tensor, if there is one.
        let candidates: Vec<&Raw> = tensors
            .iter()
            .filter(|t| FLOATS.contains(&t.dtype) && !t.bytes.is_empty())
            .collect();
        let changed = (!candidates.is_empty()).then(|| candidates[change.index(candidates.len())]);
        if let Some(t) = changed {
            let mut w = ckpt.params_mut().get_mut(&t.name).unwrap();
            let first = w.iter_mut().next().unwrap();
            *first = if *first == 0.5 { 0.25 } else { 0.5 };
        }
        ckpt.save(&output).unwrap();

        let out = SafetensorsFile::open(&output).unwrap();
        prop_assert_eq!(out.metadata(), metadata.as_ref());
        prop_assert_eq!(out.tensors().len(), tensors.len());
        for t in &tensors {
            let entry = out.tensor(&t.name).unwrap();
            prop_assert_eq!((entry.dtype(), entry.shape()), (t.dtype, &t.shape[..]));
            let bytes = out.read_bytes(&t.name).unwrap();
            if changed.is_some_and(|c| c.name == t.name) {
                let size = size_of(t.dtype);
                prop_assert_ne!(&bytes[..size], &t.bytes[..size]);
                let read = out.read_f32(&t.name).unwrap();
                let first = *read.iter().next().unwrap();
                prop_assert!(first == 0.5 || first == 0.25);
            } else {
                prop_assert_eq!(&bytes, &t.bytes, "{} ({})", t.name, t.dtype);
            }
        }
    }

    /// A masked copy has +0.0 (all zero bytes) where the mask is 0 and the original bit patterns
    /// where it is 1, in every float dtype; tensors without a mask and the metadata are copied
    /// byte for byte.
    #[test]
    fn write_masked_zeroes_pruned_elements_and_keeps_every_other_bit(
        tensors in raw_tensors(),
        metadata in metadata_strategy(),
        seeds in prop::collection::vec(any::<Option<u64>>(), 6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
        write_reference(&input, &tensors, metadata.clone());

        let mut masks = MaskSet::new();
        for (t, seed) in tensors.iter().zip(&seeds) {
            if let (true, Some(seed)) = (FLOATS.contains(&t.dtype), seed) {
                let n = t.shape.iter().product::<usize>();
                // A reproducible pattern: bit i of the seed, cycled.
                let keep = (0..n).map(|i| seed >> (i % 64) & 1 == 1).collect();
                masks.insert(&t.name, Mask::from_vec(&t.shape, keep).unwrap());
            }
        }
        let src = SafetensorsFile::open(&input).unwrap();
        write_masked(&src, &masks, &output).unwrap();

        let out = SafetensorsFile::open(&output).unwrap();
        prop_assert_eq!(out.metadata(), metadata.as_ref());
        for t in &tensors {
            let bytes = out.read_bytes(&t.name).unwrap();
            prop_assert_eq!(out.tensor(&t.name).unwrap().dtype(), t.dtype);
            match masks.get(&t.name) {
                None => prop_assert_eq!(&bytes, &t.bytes),
                Some(mask) => {
                    let size = size_of(t.dtype);
                    let elements = bytes.chunks(size).zip(t.bytes.chunks(size));
                    for ((got, was), &keep) in elements.zip(mask.as_slice()) {
                        if keep {
                            prop_assert_eq!(got, was);
                        } else {
                            prop_assert!(got.iter().all(|&b| b == 0));
                        }
                    }
                    let values = out.read_f32(&t.name).unwrap();
                    for (x, &keep) in values.iter().zip(mask.as_slice()) {
                        if !keep {
                            prop_assert_eq!(x.to_bits(), 0, "+0.0, not -0.0");
                        }
                    }
                }
            }
        }

        // The masks file gives the same masks back.
        let masks_path = dir.path().join("masks.safetensors");
        save_masks(&masks_path, &masks, metadata.clone()).unwrap();
        prop_assert_eq!(&load_masks(&masks_path).unwrap(), &masks);
        let masks_file = SafetensorsFile::open(&masks_path).unwrap();
        // An empty map in a file without tensors is dropped (see `write_atomic`).
        let expected = metadata.filter(|m| !m.is_empty() || !masks.is_empty());
        prop_assert_eq!(masks_file.metadata(), expected.as_ref());
    }
}

/// The fixture written by Python's `safetensors` (tests/fixtures/io_fixtures.py), checked against
/// values written here by hand.
#[test]
fn reads_the_file_python_wrote() {
    let file = SafetensorsFile::open(fixture("mixed.safetensors")).unwrap();
    let metadata: HashMap<String, String> = [("format", "pt"), ("source", "io_fixtures.py")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(file.metadata(), Some(&metadata));
    let order: Vec<_> = file
        .tensors()
        .iter()
        .map(|e| (e.name(), e.dtype()))
        .collect();
    assert_eq!(
        order,
        [
            ("bn.num_batches_tracked", Dtype::I64),
            ("ids", Dtype::I64),
            ("head.weight", Dtype::F64),
            ("conv.weight", Dtype::F32),
            ("fc.bias", Dtype::BF16),
            ("fc.weight", Dtype::F16),
            ("quant.zero_point", Dtype::U8),
        ],
        "data order, as the reference writer sorts: dtype descending, then name"
    );

    let read = |name: &str| {
        let a = file.read_f32_checked(name).unwrap();
        (a.shape().to_vec(), bits(a.iter().copied()))
    };
    assert_eq!(
        read("conv.weight"),
        (vec![2, 3], bits([0.5, -1.25, 3.0e-8, 1.0e30, -0.0, 7.0]))
    );
    let (p14, p24, p133) = (2f32.powi(-14), 2f32.powi(-24), 2f32.powi(-133));
    assert_eq!(
        read("fc.weight"),
        (vec![3, 2], bits([1.0, -2.5, 65504.0, p14, p24, 0.0]))
    );
    assert_eq!(
        read("fc.bias"),
        (vec![4], bits([1.0, -0.5, 3.140625, p133]))
    );
    // f64 → f32 rounds to nearest: 0.1 and 1/3 as Rust parses them into f32; -1e-300 keeps its
    // sign as it underflows.
    assert_eq!(
        read("head.weight"),
        (vec![2, 2], bits([0.1, 0.333_333_34, -0.0, 2.5]))
    );
    assert_eq!(
        file.read_bytes("bn.num_batches_tracked").unwrap(),
        1200_i64.to_le_bytes()
    );
    assert_eq!(
        file.tensor("bn.num_batches_tracked").unwrap().shape(),
        &[] as &[usize]
    );
    let ids: Vec<u8> = [-1_i64, 0, 1 << 40]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(file.read_bytes("ids").unwrap(), ids);
    assert_eq!(
        file.read_bytes("quant.zero_point").unwrap(),
        [0, 1, 128, 255]
    );
    assert!(matches!(
        file.read_f32("ids"),
        Err(Error::UnsupportedDtype { tensor, dtype }) if tensor == "ids" && dtype == "I64"
    ));

    let ckpt = Checkpoint::load(fixture("mixed.safetensors")).unwrap();
    let params: Vec<_> = ckpt.params().names().collect();
    assert_eq!(
        params,
        ["head.weight", "conv.weight", "fc.bias", "fc.weight"]
    );
    let raw: Vec<_> = ckpt.raw_tensors().map(|(n, t)| (n, t.dtype())).collect();
    assert_eq!(
        raw,
        [
            ("bn.num_batches_tracked", Dtype::I64),
            ("ids", Dtype::I64),
            ("quant.zero_point", Dtype::U8)
        ]
    );
    ckpt.check_finite().unwrap();
}

/// Loading the Python-written file and saving it again changes no tensor's bytes (the F64
/// values, which f32 cannot hold, included) and keeps the metadata.
#[test]
fn the_python_file_survives_load_and_save() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("again.safetensors");
    Checkpoint::load(fixture("mixed.safetensors"))
        .unwrap()
        .save(&out)
        .unwrap();
    let (a, b) = (
        SafetensorsFile::open(fixture("mixed.safetensors")).unwrap(),
        SafetensorsFile::open(&out).unwrap(),
    );
    assert_eq!(a.metadata(), b.metadata());
    for entry in a.tensors() {
        assert_eq!(
            a.read_bytes(entry.name()).unwrap(),
            b.read_bytes(entry.name()).unwrap(),
            "{}",
            entry.name()
        );
    }
    // Same names, dtypes and order: the reference writer's order is reproduced.
    let describe = |f: &SafetensorsFile| -> Vec<_> {
        f.tensors()
            .iter()
            .map(|e| (e.name().to_string(), e.dtype(), e.byte_range()))
            .collect()
    };
    assert_eq!(describe(&a), describe(&b));
}

/// Masks for every float tensor of the Python fixture: keep the elements whose flat index is
/// not 1 modulo 3.
fn fixture_masks(file: &SafetensorsFile) -> MaskSet {
    file.tensors()
        .iter()
        .filter(|e| FLOATS.contains(&e.dtype()))
        .map(|e| {
            let keep = (0..e.len()).map(|i| i % 3 != 1).collect();
            (e.name(), Mask::from_vec(e.shape(), keep).unwrap())
        })
        .collect()
}

/// shears' masked copy of the Python fixture matches the committed one, which
/// `io_fixtures.py check` verified with torch. `SHEARS_BLESS=1` rewrites the committed files.
#[test]
fn masked_python_file_matches_the_copy_python_checked() {
    let src = SafetensorsFile::open(fixture("mixed.safetensors")).unwrap();
    let masks = fixture_masks(&src);
    let dir = tempfile::tempdir().unwrap();
    let (masked, masks_path) = if std::env::var_os("SHEARS_BLESS").is_some() {
        (
            fixture("mixed_masked.safetensors"),
            fixture("mixed_masks.safetensors"),
        )
    } else {
        (
            dir.path().join("masked.safetensors"),
            dir.path().join("masks.safetensors"),
        )
    };
    write_masked(&src, &masks, &masked).unwrap();
    save_masks(&masks_path, &masks, None).unwrap();

    let ours = SafetensorsFile::open(&masked).unwrap();
    let checked = SafetensorsFile::open(fixture("mixed_masked.safetensors")).unwrap();
    assert_eq!(ours.metadata(), checked.metadata());
    assert_eq!(ours.tensors(), checked.tensors());
    for entry in checked.tensors() {
        let name = entry.name();
        assert_eq!(
            ours.read_bytes(name).unwrap(),
            checked.read_bytes(name).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        load_masks(fixture("mixed_masks.safetensors")).unwrap(),
        masks
    );
    // And directly: 0.5 (index 0) kept, -1.25 (index 1) pruned.
    assert_eq!(
        bits(ours.read_f32("conv.weight").unwrap().iter().copied()),
        bits([0.5, 0.0, 3.0e-8, 1.0e30, 0.0, 7.0])
    );
    assert_eq!(
        ours.read_bytes("head.weight").unwrap()[..8],
        0.1_f64.to_le_bytes(),
        "kept F64 values keep their full precision"
    );
}

/// The input's bytes and modification time.
fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        fs::read(path).unwrap(),
        fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn failed_writes_leave_no_output_no_temporary_and_the_input_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    fs::copy(fixture("mixed.safetensors"), &input).unwrap();
    let before = snapshot(&input);
    let src = SafetensorsFile::open(&input).unwrap();
    let good = fixture_masks(&src);

    // A mask of the wrong shape is refused before anything is written.
    let mut bad = good.clone();
    bad.insert("fc.weight", Mask::ones(&[2, 3]));
    let out = dir.path().join("out.safetensors");
    assert!(matches!(
        write_masked(&src, &bad, &out),
        Err(Error::ShapeMismatch { name, .. }) if name == "fc.weight"
    ));
    assert_eq!(listing(dir.path()), ["in.safetensors"]);

    // Destinations that cannot be written: a missing directory, a "directory" that is a file,
    // and an existing directory, which fails only at the final rename, after the whole file
    // was written.
    fs::create_dir(dir.path().join("taken")).unwrap();
    fs::write(dir.path().join("taken/keep"), b"x").unwrap();
    for out in [
        "missing/out.safetensors",
        "in.safetensors/out.safetensors",
        "taken",
    ] {
        let out = dir.path().join(out);
        let err = write_masked(&src, &good, &out).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{out:?}: {err:?}");
        let err = Checkpoint::load(&input).unwrap().save(&out).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{out:?}: {err:?}");
        assert!(save_masks(&out, &good, None).is_err());
        assert_eq!(listing(dir.path()), ["in.safetensors", "taken"], "{out:?}");
        assert_eq!(listing(&dir.path().join("taken")), ["keep"]);
    }

    // Writing over the input itself is refused.
    let err = write_masked(&src, &good, &input).unwrap_err();
    assert!(err.to_string().contains("is the input file"), "{err}");

    assert_eq!(snapshot(&input), before);
    // And a good write still works from the same open file.
    write_masked(&src, &good, &out).unwrap();
    assert_eq!(
        listing(dir.path()),
        ["in.safetensors", "out.safetensors", "taken"]
    );
    assert_eq!(snapshot(&input), before);
}

#[test]
fn a_failed_write_keeps_the_previous_output() {
    let dir = tempfile::tempdir().unwrap();
    let src = SafetensorsFile::open(fixture("mixed.safetensors")).unwrap();
    let out = dir.path().join("out.safetensors");
    write_masked(&src, &MaskSet::new(), &out).unwrap();
    let previous = fs::read(&out).unwrap();
    let bad: MaskSet = [("nope", Mask::ones(&[1]))].into_iter().collect();
    assert!(matches!(
        write_masked(&src, &bad, &out),
        Err(Error::UnknownTensor { .. })
    ));
    assert_eq!(fs::read(&out).unwrap(), previous);
    assert_eq!(listing(dir.path()), ["out.safetensors"]);
}

/// Every prefix of a real file, and a few classic corruptions of it, are clean errors.
#[test]
fn corrupt_copies_of_the_python_file_are_invalid_file_errors() {
    let good = fs::read(fixture("mixed.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let check = |bytes: &[u8], what: &str| {
        fs::write(&path, bytes).unwrap();
        for result in [
            SafetensorsFile::open(&path).map(drop),
            Checkpoint::load(&path).map(drop),
            load_masks(&path).map(drop),
        ] {
            assert!(
                matches!(result, Err(Error::InvalidFile { .. })),
                "{what}: {result:?}"
            );
        }
    };
    for cut in (0..good.len()).step_by(3) {
        check(&good[..cut], &format!("truncated to {cut} bytes"));
    }
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + header_len].to_vec()).unwrap();
    let with_header = |h: &str| {
        let mut h = h.as_bytes().to_vec();
        h.resize(header_len, b' ');
        [
            &(header_len as u64).to_le_bytes()[..],
            &h,
            &good[8 + header_len..],
        ]
        .concat()
    };
    // Overlapping offsets, offsets past the end, and a shape that disagrees with its bytes.
    check(
        &with_header(&header.replace("[88,96]", "[80,88]")),
        "overlap",
    );
    check(
        &with_header(&header.replace("[108,112]", "[108,999]")),
        "past the end",
    );
    check(
        &with_header(&header.replace(
            r#""shape":[2,2],"data_offsets":[32"#,
            r#""shape":[2,3],"data_offsets":[32"#,
        )),
        "shape mismatch",
    );
    let mut garbage = good.clone();
    garbage[8..24].copy_from_slice(b"\xff\xfe garbage \x00\x01!!!");
    check(&garbage, "garbage header");
    let mut long = good.clone();
    long[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
    check(&long, "header length larger than the file");
}
