//! The interpreter's cfgs (`Py_GIL_DISABLED`...) for our own code, as pyo3
//! sets them for its own: src/gil_cell.rs is a Mutex on a free-threaded build,
//! and src/type_cache.rs reads the 3.11/3.12 version-tag flag (`Py_3_13`).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
