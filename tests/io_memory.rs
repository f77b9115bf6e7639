//! How much memory the streaming paths allocate, measured with a counting global allocator.
//!
//! One test function only: the counters are global to this test binary, and tests in the same
//! binary would run on other threads at the same time.

use ndarray::{ArrayD, IxDyn};
use shears::io::{Checkpoint, Dtype, SafetensorsFile, save_tensors, write_masked};
use shears::{Mask, MaskSet};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::peak_of;

const MIB: usize = 1 << 20;
/// The safetensors writer's `BufWriter`.
const WRITE_BUFFER: usize = MIB;
/// `SafetensorsFile`'s read chunk.
const READ_CHUNK: usize = MIB;
/// Names, headers, shapes, path buffers.
const SLACK: usize = 256 << 10;

#[test]
fn streaming_paths_hold_about_one_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");

    // 24 tensors of 1 MiB of f32 (plus a 2 MiB one): 26 MiB on disk.
    let n = MIB / 4;
    let tensors: Vec<(String, ArrayD<f32>)> = (0..25)
        .map(|i| {
            let len = if i == 7 { 2 * n } else { n };
            let values = (0..len).map(|j| (j % 1000) as f32 - 500.0).collect();
            (
                format!("layer{i}.weight"),
                ArrayD::from_shape_vec(IxDyn(&[len / 256, 256]), values).unwrap(),
            )
        })
        .collect();
    let largest = 2 * MIB;
    let (_, saving) = peak_of(|| {
        save_tensors(
            &input,
            tensors
                .iter()
                .map(|(name, a)| (name.as_str(), a.view(), Dtype::F32)),
            None,
        )
        .unwrap()
    });
    let file_len = std::fs::metadata(&input).unwrap().len() as usize;
    assert!(file_len > 26 * MIB);
    assert!(
        saving < largest + WRITE_BUFFER + SLACK,
        "save_tensors allocated {saving} bytes at once"
    );

    let src = SafetensorsFile::open(&input).unwrap();
    let masks: MaskSet = tensors
        .iter()
        .map(|(name, a)| {
            let keep = (0..a.len()).map(|j| j % 2 == 0).collect();
            (name.clone(), Mask::from_vec(a.shape(), keep).unwrap())
        })
        .collect();
    drop(tensors);

    // The masked copy: one tensor's bytes and the writer's buffer, not the file.
    let (_, masking) = peak_of(|| write_masked(&src, &masks, &output).unwrap());
    assert!(
        masking < largest + WRITE_BUFFER + SLACK,
        "write_masked allocated {masking} bytes at once for a {file_len}-byte file"
    );

    // One tensor as f32: the result and one read chunk.
    let (w, reading) = peak_of(|| src.read_f32("layer7.weight").unwrap());
    assert_eq!(w.len(), 2 * n);
    assert!(
        reading < largest + READ_CHUNK + SLACK,
        "read_f32 allocated {reading}"
    );
    drop(w);

    // A whole f32 checkpoint: its values and one read chunk, never the file bytes as well.
    let (ckpt, loading) = peak_of(|| Checkpoint::load(&output).unwrap());
    assert!(
        loading < file_len + READ_CHUNK + SLACK,
        "Checkpoint::load allocated {loading} for a {file_len}-byte file"
    );
    let (_, resaving) = peak_of(|| ckpt.save(&input).unwrap());
    assert!(
        resaving < largest + WRITE_BUFFER + SLACK,
        "Checkpoint::save allocated {resaving}"
    );
    eprintln!(
        "file {file_len} B; peaks: save_tensors {saving}, write_masked {masking}, read_f32 {reading}, \
         Checkpoint::load {loading}, Checkpoint::save {resaving}"
    );
}
