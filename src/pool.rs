//! Reuse of large buffers between passes, per thread.
//!
//! A training step allocates and frees the same few dozen buffers of hundreds of kilobytes each
//! (activations, their gradients, im2col matrices). Fresh allocations of that size come from the
//! operating system as new pages, and the system allocator returns freed ones just as eagerly, so
//! every step paid again for page faults and zeroing (a third of a step's time on the reference
//! CNN). Buffers that a pass is done with are therefore handed back here and taken again by the
//! next allocation of a fitting size on the same thread. Results never depend on it: a reused
//! buffer is zeroed like a fresh one. Each thread keeps at most [`MAX_BUFFERS`] buffers and
//! [`MAX_BYTES`] bytes; anything beyond is freed as usual.

use std::cell::RefCell;

use ndarray::ArrayD;

/// Buffers smaller than this many bytes come cheaply from the allocator and are not kept.
const MIN_BYTES: usize = 64 << 10;
/// Buffers kept per thread and element type.
const MAX_BUFFERS: usize = 64;
/// Bytes kept per thread and element type.
const MAX_BYTES: usize = 256 << 20;

/// Element types with a pool.
pub(crate) trait Pooled: Copy + Default + 'static {
    /// Runs `f` on this thread's free list for the type.
    fn with_free<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

macro_rules! pooled {
    ($t:ty, $name:ident) => {
        thread_local! {
            static $name: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
        }
        impl Pooled for $t {
            fn with_free<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R {
                $name.with(|free| f(&mut free.borrow_mut()))
            }
        }
    };
}
pooled!(f32, FREE_F32);
pooled!(u32, FREE_U32);

fn bytes<T>(len: usize) -> usize {
    len.saturating_mul(size_of::<T>())
}

/// A kept buffer with a capacity between `len` and `2 · len`, if there is one.
fn take<T: Pooled>(len: usize) -> Option<Vec<T>> {
    if bytes::<T>(len) < MIN_BYTES {
        return None;
    }
    T::with_free(|free| {
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        Some(free.swap_remove(best))
    })
}

/// A buffer of `len` default values (zeros), reusing a kept one when one fits.
pub(crate) fn zeroed<T: Pooled>(len: usize) -> Vec<T> {
    match take(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, T::default());
            v
        }
        None => vec![T::default(); len],
    }
}

/// A buffer of `len` values of no particular content, for a kernel that overwrites every one of
/// them: a reused buffer keeps its old values (no time spent zeroing), a fresh one is zeros.
pub(crate) fn reused<T: Pooled>(len: usize) -> Vec<T> {
    match take(len) {
        Some(mut v) => {
            v.truncate(len);
            v.resize(len, T::default());
            v
        }
        None => vec![T::default(); len],
    }
}

/// A copy of `x` in a (possibly reused) buffer.
pub(crate) fn copied(x: &[f32]) -> Vec<f32> {
    let mut v = reused(x.len());
    v.copy_from_slice(x);
    v
}

/// Hands a buffer back for reuse on this thread.
pub(crate) fn recycle<T: Pooled>(v: Vec<T>) {
    if bytes::<T>(v.capacity()) < MIN_BYTES {
        return;
    }
    T::with_free(|free| {
        let kept: usize = free.iter().map(|v| bytes::<T>(v.capacity())).sum();
        if free.len() < MAX_BUFFERS && kept + bytes::<T>(v.capacity()) <= MAX_BYTES {
            free.push(v);
        }
    });
}

/// Hands an array's buffer back for reuse on this thread.
pub(crate) fn recycle_array(a: ArrayD<f32>) {
    recycle(a.into_raw_vec_and_offset().0);
}

/// A scratch buffer from the pool, handed back when dropped (on the thread that drops it).
pub(crate) struct Scratch(Vec<f32>);

impl Scratch {
    /// `len` values of no particular content (see [`reused`]): the kernel writes before it
    /// reads.
    pub fn new(len: usize) -> Self {
        Scratch(reused(len))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Vec<f32>;
    fn deref(&self) -> &Vec<f32> {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut Vec<f32> {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_buffers_are_zeroed_and_fit() {
        let n = MIN_BYTES;
        let mut v = zeroed::<f32>(n);
        v.fill(7.0);
        let ptr = v.as_ptr();
        recycle(v);
        // A fitting request takes the same buffer back, zeroed.
        let w = zeroed::<f32>(n - 5);
        assert_eq!(w.as_ptr(), ptr);
        assert!(w.iter().all(|&x| x == 0.0));
        assert_eq!(w.len(), n - 5);
        recycle(w);
        // A request far smaller than the kept buffer does not take it.
        let small = zeroed::<f32>(n * 5 / 16);
        assert_ne!(small.as_ptr(), ptr);
        recycle(small);
        // A dirty buffer keeps its values; only what it grows by is zero.
        let mut d = reused::<f32>(n);
        d[0] = 3.0;
        let ptr = d.as_ptr();
        recycle(d);
        let d = reused::<f32>(n - 1);
        assert_eq!((d.as_ptr(), d[0]), (ptr, 3.0));
        // Tiny buffers are not kept.
        recycle(vec![1u32; 3]);
        assert_eq!(u32::with_free(|f| f.len()), 0);
    }
}
