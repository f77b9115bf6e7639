//! How much memory the streaming paths allocate, measured with a counting global allocator.
//!
//! One test function only: the counters are global to this test binary, and tests in the same
//! binary would run on other threads at the same time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{ArrayD, IxDyn};
use shears::io::{Checkpoint, Dtype, SafetensorsFile, save_tensors, write_masked};
use shears::{Mask, MaskSet};

/// The system allocator, counting the bytes live now and the most live since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Ordering::SeqCst) + bytes;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the old block freed after the new one exists: what a moving realloc
            // needs at its peak.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes it had allocated at once on top of what
/// was live before.
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst) - base)
}

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
