//! asyncore-rs: CPython 3.11's `asyncore` and `asynchat`, with the event loop,
//! the socket calls and asynchat's terminator scanning in Rust.
//!
//! This file only assembles the module; each concern lives in its own file.

mod async_chat;
mod calls;
mod dispatcher;
mod errors;
mod event_loop;
mod fifo;
mod loadgen;
mod module_state;
mod output_batch;
mod scanner;
mod sockio;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<dispatcher::Dispatcher>()?;
    m.add_class::<fifo::Fifo>()?;
    m.add_class::<fifo::SimpleProducer>()?;
    m.add_function(wrap_pyfunction!(module_state::bind_asyncore, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::loop_, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::poll, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::poll2, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::read, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::write, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::exception, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::readwrite, m)?)?;
    m.add_function(wrap_pyfunction!(event_loop::close_all, m)?)?;
    m.add_function(wrap_pyfunction!(errors::compact_traceback, m)?)?;
    m.add_function(wrap_pyfunction!(errors::strerror, m)?)?;
    m.add_function(wrap_pyfunction!(async_chat::find_prefix_at_end, m)?)?;
    loadgen::register(m)?;
    Ok(())
}
