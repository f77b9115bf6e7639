//! Writes a synthetic f32 checkpoint of about N parameters spread over transformer-like tensors,
//! for measuring the `shears` command on large files (see `benches/cli_memory.sh`).
//!
//! ```text
//! cargo run --release --example synthetic_checkpoint -- /tmp/model.safetensors 50000000
//! ```

use ndarray::{ArrayD, IxDyn};
use shears::io::{Dtype, save_tensors};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next()) else {
        return Err("usage: synthetic_checkpoint OUT.safetensors NUM_PARAMS".into());
    };
    let target: usize = n.parse()?;
    // Blocks of a small transformer: four [1024, 1024] projections and two [4096, 1024] MLP
    // matrices (12.6M parameters), plus a norm vector, repeated until the target is reached.
    let block: [(&str, &[usize]); 7] = [
        ("attn.q.weight", &[1024, 1024]),
        ("attn.k.weight", &[1024, 1024]),
        ("attn.v.weight", &[1024, 1024]),
        ("attn.o.weight", &[1024, 1024]),
        ("mlp.up.weight", &[4096, 1024]),
        ("mlp.down.weight", &[1024, 4096]),
        ("norm.weight", &[1024]),
    ];
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    // A xorshift stream mapped to (-1, 1): deterministic, and cheap to make.
    let mut tensor = |shape: &[usize]| {
        let len = shape.iter().product();
        let values = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        ArrayD::from_shape_vec(IxDyn(shape), values)
    };
    let mut tensors = Vec::new();
    let mut total = 0;
    'outer: for layer in 0.. {
        for (name, shape) in block {
            let len: usize = shape.iter().product();
            if total + len > target {
                // The remainder as one last matrix of 1024-wide rows (and a short vector).
                let rows = (target - total) / 1024;
                if rows > 0 {
                    tensors.push(("head.weight".to_string(), tensor(&[rows, 1024])?));
                }
                let rest = target - total - rows * 1024;
                if rest > 0 {
                    tensors.push(("head.bias".to_string(), tensor(&[rest])?));
                }
                total = target;
                break 'outer;
            }
            tensors.push((format!("layers.{layer}.{name}"), tensor(shape)?));
            total += len;
        }
    }
    save_tensors(
        &path,
        tensors
            .iter()
            .map(|(n, a)| (n.as_str(), a.view(), Dtype::F32)),
        None,
    )?;
    println!(
        "wrote {total} parameters in {} tensors to {path}",
        tensors.len()
    );
    Ok(())
}
