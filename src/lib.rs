//! asyncore-rs: CPython 3.11's `asyncore` and `asynchat`, with the event loop,
//! the socket calls and asynchat's terminator scanning in Rust.
//!
//! This file only assembles the module; each concern lives in its own file.

// Layers, lowest first: a module uses only the modules declared before it
// (tools/check_layers.py enforces this order; docs/internals.rst draws it).
// layer: primitives
mod names;
mod calls;
mod gil_cell;
mod type_cache;
mod dict_watch;
mod managed_dict;
mod fd_map;
mod module_state;
mod pyobj;
mod scanner;
mod inbuf;
mod errors;
mod sockio;
mod socket_map;

// layer: poller
mod poller;
mod link;

// layer: channel
mod fifo;
mod channel;
mod handler_calls;

// layer: classes
mod output_batch;
mod dispatcher;
mod with_send;
mod async_chat;
mod fast_methods;

// layer: loop
mod interest;
mod registrations;
mod loop_state;
mod loop_cache;
mod event_loop;

// layer: tools (the benchmark's load generator and ceiling server; they use
// nothing from the rest of the crate)
#[cfg(target_os = "linux")] // epoll, Linux socket options and clocks
mod loadgen_net;
#[cfg(target_os = "linux")]
mod ceiling;
#[cfg(target_os = "linux")]
mod loadgen;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<channel::Dispatcher>()?;
    fast_methods::install(&m.py().get_type::<channel::Dispatcher>())?;
    m.add_class::<fifo::Fifo>()?;
    m.add_class::<fifo::SimpleProducer>()?;
    m.add_class::<socket_map::ChangeLog>()?;
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
    m.add_function(wrap_pyfunction!(poller::poller_name, m)?)?;
    m.add_function(wrap_pyfunction!(async_chat::find_prefix_at_end, m)?)?;
    #[cfg(target_os = "linux")]
    loadgen::register(m)?;
    Ok(())
}
