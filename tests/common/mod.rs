//! Test helpers: reading the PyTorch fixtures written by tests/fixtures/make_graph_fixtures.py.
//!
//! A small loader on the `safetensors` crate directly, so that these tests do not depend on the
//! crate's own I/O module.

use std::path::PathBuf;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use shears::{NetworkSpec, Params};

/// Name of the input batch in a fixture file.
pub const INPUT: &str = "__input__";
/// Name of PyTorch's output in a fixture file.
pub const OUTPUT: &str = "__output__";

/// Directory of the layer-graph fixtures.
pub fn graph_fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/graph")
}

/// Every f32 tensor of a safetensors file, in name order.
pub fn read_f32_tensors(path: &std::path::Path) -> Vec<(String, ArrayD<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let view = st.tensor(&name).expect("listed tensor");
            assert_eq!(view.dtype(), Dtype::F32, "{name}: fixtures are f32");
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let array = ArrayD::from_shape_vec(IxDyn(view.shape()), data).expect("consistent view");
            (name, array)
        })
        .collect()
}

/// A fixture case: the spec, the parameters, the input batch and PyTorch's output.
pub struct Fixture {
    pub spec: NetworkSpec,
    pub params: Params,
    pub input: ArrayD<f32>,
    pub output: ArrayD<f32>,
}

/// Reads `tests/fixtures/graph/{case}.json` and `{case}.safetensors`.
pub fn load_graph_fixture(case: &str) -> Fixture {
    let dir = graph_fixtures();
    let json = std::fs::read_to_string(dir.join(format!("{case}.json"))).expect("spec file");
    let spec = NetworkSpec::from_json(&json).unwrap_or_else(|e| panic!("{case}: {e}"));
    let mut input = None;
    let mut output = None;
    let mut params = Params::new();
    for (name, array) in read_f32_tensors(&dir.join(format!("{case}.safetensors"))) {
        match name.as_str() {
            INPUT => input = Some(array),
            OUTPUT => output = Some(array),
            _ => {
                params.insert(name, array);
            }
        }
    }
    Fixture {
        spec,
        params,
        input: input.expect("fixture has an input"),
        output: output.expect("fixture has an output"),
    }
}

/// The names of all graph fixture cases, sorted.
pub fn graph_cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(graph_fixtures())
        .expect("fixture directory")
        .filter_map(|e| {
            let path = e.expect("directory entry").path();
            (path.extension()? == "json").then(|| path.file_stem()?.to_str().map(String::from))?
        })
        .collect();
    cases.sort();
    cases
}
