//! A network on disk: its JSON spec beside its safetensors checkpoint.

use std::collections::HashMap;
use std::path::Path;

use super::{Checkpoint, Dtype, save_tensors, write_text};
use crate::error::{Error, Result};
use crate::graph::{Network, NetworkSpec};

/// Loads a network from its JSON spec and its safetensors checkpoint (any float dtype).
///
/// ```
/// use shears::Network;
/// use shears::io::{load_network, save_network};
///
/// let dir = tempfile::tempdir()?;
/// let (spec, weights) = (dir.path().join("net.json"), dir.path().join("net.safetensors"));
/// let net = Network::builder(&[3]).linear("fc", 3, 2).build_init(0)?;
/// save_network(&net, &spec, &weights, None)?;
/// assert_eq!(load_network(&spec, &weights)?.params(), net.params());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// [`Error::Io`] or [`Error::InvalidFile`] for unreadable files, and whatever [`Network::new`]
/// finds wrong with the pair (missing or misshapen parameters, shapes that do not fit).
pub fn load_network(spec: impl AsRef<Path>, checkpoint: impl AsRef<Path>) -> Result<Network> {
    let spec = spec.as_ref();
    let json = std::fs::read_to_string(spec).map_err(|e| Error::io(spec, e))?;
    let spec = NetworkSpec::from_json(&json).map_err(|e| Error::InvalidFile {
        path: spec.to_path_buf(),
        reason: e.to_string(),
    })?;
    Network::new(spec, Checkpoint::load(checkpoint)?.into_params())
}

/// Saves a network as its JSON spec and an `f32` safetensors checkpoint, each written atomically.
///
/// # Errors
/// [`Error::Io`] when a file cannot be written.
pub fn save_network(
    net: &Network,
    spec: impl AsRef<Path>,
    checkpoint: impl AsRef<Path>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let spec = spec.as_ref();
    let views = net.params().iter().map(|(n, p)| (n, p.view(), Dtype::F32));
    save_tensors(checkpoint, views, metadata)?;
    write_text(spec, &(net.spec().to_json()? + "\n"))
}
