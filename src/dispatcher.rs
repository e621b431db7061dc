//! `asyncore.dispatcher`: one Rust object layout for every channel class.
//!
//! `dispatcher_with_send`, `async_chat` and `file_dispatcher` are Python
//! subclasses (so they mix freely in multiple inheritance, as in CPython) whose
//! methods are this class's Rust methods under private names (`_ws_*`, `_ac_*`).
//!
//! State that decides a channel's poll interest (`connected`, `accepting`,
//! `out_buffer`, `producer_fifo`) lives in Rust behind data descriptors, so the
//! event loop learns of every change without asking Python each pass. State
//! nothing in Rust needs stays in the instance `__dict__`, as in CPython.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pyo3::exceptions::{PyOSError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString, PyTuple, PyType, PyWeakrefReference};

use crate::async_chat;
use crate::errors::{errno_of, is_disconnect, os_error_with};
use crate::event_loop::ChannelNotify;
use crate::fifo::Fifo;
use crate::module_state::global;
use crate::output_batch;
use crate::sockio::{recv_bytes, send_obj};

/// Attributes whose Rust field is authoritative unless a subclass shadows the
/// descriptor with a class attribute (then Python attribute lookup is used).
pub const F_CONNECTED: u16 = 1;
pub const F_ACCEPTING: u16 = 2;
pub const F_CONNECTING: u16 = 4;
pub const F_SOCKET: u16 = 8;
pub const F_FILENO: u16 = 16;
pub const F_OUT: u16 = 32;
pub const F_INBUF: u16 = 64;
pub const F_FIFO: u16 = 128;
/// The instance `__dict__` pointer is at `dispatcher`'s `tp_dictoffset`.
const F_DICTPTR: u16 = 256;
const F_KNOWN: u16 = 0x8000;

#[derive(Default)]
pub struct State {
    pub connected: bool,
    pub accepting: bool,
    pub connecting: bool,
    pub socket: Option<Py<PyAny>>,
    pub fileno: Option<Py<PyAny>>,
    /// `dispatcher_with_send.out_buffer`.
    pub out_buffer: Option<Py<PyAny>>,
    /// `async_chat.ac_in_buffer` is `in_buf[in_start..]`.
    pub in_buf: Vec<u8>,
    pub in_start: usize,
    /// Set while asynchat calls `collect_incoming_data`; see async_chat.rs.
    pub in_callback: bool,
    pub in_stash: Option<(Vec<u8>, usize)>,
    pub producer_fifo: Option<Py<PyAny>>,
}

impl State {
    pub fn in_data(&self) -> &[u8] {
        &self.in_buf[self.in_start..]
    }

    pub fn set_in_data(&mut self, data: &[u8]) {
        if self.in_callback && self.in_stash.is_none() {
            let old = std::mem::take(&mut self.in_buf);
            self.in_stash = Some((old, self.in_start));
        }
        self.in_buf.clear();
        self.in_buf.extend_from_slice(data);
        self.in_start = 0;
    }
}

#[pyclass(
    frozen,
    subclass,
    dict,
    weakref,
    module = "asyncore",
    name = "dispatcher"
)]
pub struct Dispatcher {
    st: Mutex<State>,
    pub notify: Arc<ChannelNotify>,
    direct: AtomicU16,
    /// Output queued by a batched push (see output_batch.rs).
    pub deferred: AtomicBool,
    /// `output_batch::BatchMode` as u8; 0 until first needed.
    pub batch_mode: AtomicU8,
    /// Inside a `found_terminator()` with more input buffered behind it.
    pub pipelined: AtomicBool,
}

impl Dispatcher {
    /// `dispatcher.handle_read_event`.
    pub fn read_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();

        if accepting(slf)? {
            slf.call_method0(intern!(py, "handle_accept"))?;
            return Ok(());
        }
        if !connected(slf)? && connecting(slf)? {
            slf.call_method0(intern!(py, "handle_connect_event"))?;
        }
        slf.call_method0(intern!(py, "handle_read"))?;
        Ok(())
    }

    /// `dispatcher.handle_write_event`.
    pub fn write_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if accepting(slf)? {
            // Accepting sockets shouldn't get a write event (CPython pretends
            // it didn't happen).
            return Ok(());
        }
        if !connected(slf)? && connecting(slf)? {
            slf.call_method0(intern!(py, "handle_connect_event"))?;
        }
        slf.call_method0(intern!(py, "handle_write"))?;
        Ok(())
    }

    /// Sets a boolean state field; if it changed and the channel's interest
    /// depends on it, tells the loop.
    pub fn store_flag(
        &self,
        pick: impl FnOnce(&mut State) -> &mut bool,
        value: bool,
        interest: bool,
    ) {
        let changed = std::mem::replace(pick(&mut self.st()), value) != value;
        if changed && interest {
            self.notify.mark_dirty();
        }
    }

    pub fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the Rust fields behind `flag` (one or more bits) are all
    /// authoritative for this object.
    pub fn is_direct(slf: &Bound<'_, Self>, flag: u16) -> bool {
        let me = slf.get();
        let mut mask = me.direct.load(Ordering::Relaxed);
        if mask & F_KNOWN == 0 {
            mask = direct_mask(slf.py(), &slf.get_type()) | F_KNOWN;
            me.direct.store(mask, Ordering::Relaxed);
        }
        mask & flag == flag
    }
}

/// Which of our descriptors `ty` still resolves to (not shadowed by a subclass
/// class attribute). Computed once per object, by walking the MRO's class
/// dicts: no AttributeError is raised and no class is kept alive.
fn direct_mask(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    // Cached per class through a weak reference: classes made at run time
    // still die with their last instance.
    type Cache = Vec<(usize, Py<PyWeakrefReference>, u16)>;
    static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
    let key = ty.as_ptr() as usize;
    {
        let cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, r, m)) = cache.iter().rev().find(|(k, _, _)| *k == key) {
            if r.bind(py).upgrade().is_some_and(|t| t.is(ty)) {
                return *m;
            }
        }
    }
    let mask = compute_direct_mask(py, ty);
    if let Ok(r) = PyWeakrefReference::new(ty) {
        let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
        cache.retain(|(k, r, _)| *k != key && r.bind(py).upgrade().is_some());
        cache.push((key, r.unbind(), mask));
    }
    mask
}

fn compute_direct_mask(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    let base_dict = py.get_type::<Dispatcher>().getattr(intern!(py, "__dict__"));
    let mro = ty.getattr(intern!(py, "__mro__"));
    let (Ok(base_dict), Ok(mro)) = (base_dict, mro) else {
        return 0;
    };
    let dicts: Vec<Bound<PyAny>> = mro
        .try_iter()
        .map(|it| {
            it.filter_map(|k| k.and_then(|k| k.getattr(intern!(py, "__dict__"))).ok())
                .collect()
        })
        .unwrap_or_default();
    let mut mask = dict_at_base_offset(py, ty);
    for (flag, public, private) in descriptor_names(py) {
        let Ok(ours) = base_dict.get_item(private) else {
            continue;
        };
        // The first class in the MRO that defines the name decides.
        let seen = dicts
            .iter()
            .find(|d| d.contains(&public).unwrap_or(false))
            .and_then(|d| d.get_item(&public).ok());
        if seen.is_none_or(|v| v.is(&ours)) {
            mask |= flag;
        }
    }
    mask
}

/// Byte offset of the instance dict pointer in our object layout
/// (`dispatcher.__dictoffset__`, pyo3's `dict` slot); 0 until known.
static DICT_OFFSET: AtomicUsize = AtomicUsize::new(0);

/// `F_DICTPTR` if `ty` keeps the instance dict where `dispatcher` does. A
/// Python subclass of a class with a dict slot inherits its tp_dictoffset; we
/// check rather than assume.
fn dict_at_base_offset(py: Python<'_>, ty: &Bound<'_, PyType>) -> u16 {
    let offset = |t: &Bound<'_, PyType>| {
        t.getattr(intern!(py, "__dictoffset__"))
            .and_then(|v| v.extract::<isize>())
            .unwrap_or(0)
    };
    let base = offset(&py.get_type::<Dispatcher>());
    match usize::try_from(base) {
        Ok(b) if b > 0 && offset(ty) == base => {
            DICT_OFFSET.store(b, Ordering::Relaxed);
            F_DICTPTR
        }
        _ => 0,
    }
}

/// Whether the instance dict of `obj` has the key `name` (an exact str).
fn instance_dict_has(obj: &Bound<'_, Dispatcher>, name: &Bound<'_, PyString>) -> bool {
    let py = obj.py();
    let offset = DICT_OFFSET.load(Ordering::Relaxed);
    if offset > 0 && Dispatcher::is_direct(obj, F_DICTPTR) {
        // SAFETY: `offset` is this object's tp_dictoffset (checked for its
        // class in direct_mask), where CPython keeps the dict pointer or NULL.
        let dict = unsafe {
            obj.as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<*mut pyo3::ffi::PyObject>()
                .read_unaligned()
        };
        if dict.is_null() {
            return false;
        }
        // SAFETY: a non-NULL dict slot holds a dict; the GIL is held.
        return match unsafe { pyo3::ffi::PyDict_Contains(dict, name.as_ptr()) } {
            0 => false,
            1 => true,
            _ => {
                drop(PyErr::take(py));
                true // can't tell: assume an override
            }
        };
    }
    match obj.getattr(intern!(py, "__dict__")) {
        Ok(d) => d
            .cast::<PyDict>()
            .is_ok_and(|d| d.contains(name).unwrap_or(true)),
        Err(_) => false,
    }
}

/// (flag, public name, name on `dispatcher`) of each Rust-backed attribute.
fn descriptor_names(py: Python<'_>) -> [(u16, Bound<'_, PyString>, Bound<'_, PyString>); 8] {
    [
        (
            F_CONNECTED,
            intern!(py, "connected").clone(),
            intern!(py, "connected").clone(),
        ),
        (
            F_ACCEPTING,
            intern!(py, "accepting").clone(),
            intern!(py, "accepting").clone(),
        ),
        (
            F_CONNECTING,
            intern!(py, "connecting").clone(),
            intern!(py, "connecting").clone(),
        ),
        (
            F_SOCKET,
            intern!(py, "socket").clone(),
            intern!(py, "socket").clone(),
        ),
        (
            F_FILENO,
            intern!(py, "_fileno").clone(),
            intern!(py, "_fileno").clone(),
        ),
        (
            F_OUT,
            intern!(py, "out_buffer").clone(),
            intern!(py, "_rs_out_buffer").clone(),
        ),
        (
            F_INBUF,
            intern!(py, "ac_in_buffer").clone(),
            intern!(py, "_rs_ac_in_buffer").clone(),
        ),
        (
            F_FIFO,
            intern!(py, "producer_fifo").clone(),
            intern!(py, "_rs_producer_fifo").clone(),
        ),
    ]
}

macro_rules! bool_attr {
    ($get:ident, $set:ident, $flag:expr, $field:ident, $name:literal, $interest:expr) => {
        pub fn $get(slf: &Bound<'_, Dispatcher>) -> PyResult<bool> {
            if Dispatcher::is_direct(slf, $flag) {
                Ok(slf.get().st().$field)
            } else {
                slf.getattr(intern!(slf.py(), $name))?.is_truthy()
            }
        }

        pub fn $set(slf: &Bound<'_, Dispatcher>, value: bool) -> PyResult<()> {
            if Dispatcher::is_direct(slf, $flag) {
                slf.get().store_flag(|st| &mut st.$field, value, $interest);
                Ok(())
            } else {
                slf.setattr(intern!(slf.py(), $name), value)
            }
        }
    };
}

bool_attr!(
    connected,
    set_connected,
    F_CONNECTED,
    connected,
    "connected",
    true
);
bool_attr!(
    accepting,
    set_accepting,
    F_ACCEPTING,
    accepting,
    "accepting",
    true
);
bool_attr!(
    connecting,
    set_connecting,
    F_CONNECTING,
    connecting,
    "connecting",
    false
);

/// A Rust-held attribute, or AttributeError while it is unset (as before
/// CPython's `__init__` assigns it).
fn field<'py>(
    slf: &Bound<'py, Dispatcher>,
    pick: impl FnOnce(&State) -> Option<&Py<PyAny>>,
    name: impl std::fmt::Display,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    match pick(&slf.get().st()) {
        Some(v) => Ok(v.bind(py).clone()),
        None => Err(missing_attr(slf, name)),
    }
}

/// `self.<name>`: the Rust field, or Python lookup when a subclass shadows it.
fn field_or_attr<'py>(
    slf: &Bound<'py, Dispatcher>,
    flag: u16,
    pick: impl FnOnce(&State) -> Option<&Py<PyAny>>,
    name: &Bound<'py, PyString>,
) -> PyResult<Bound<'py, PyAny>> {
    if Dispatcher::is_direct(slf, flag) {
        // The name is formatted only for the error (a hot path: no String here).
        field(slf, pick, name)
    } else {
        slf.getattr(name)
    }
}

/// `self.socket`.
pub fn socket_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_SOCKET,
        |st| st.socket.as_ref(),
        intern!(slf.py(), "socket"),
    )
}

/// `self.out_buffer`.
pub fn out_buffer_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_OUT,
        |st| st.out_buffer.as_ref(),
        intern!(slf.py(), "out_buffer"),
    )
}

pub fn set_out_buffer(slf: &Bound<'_, Dispatcher>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if Dispatcher::is_direct(slf, F_OUT) {
        store_out_buffer(slf.get(), value);
        Ok(())
    } else {
        slf.setattr(intern!(slf.py(), "out_buffer"), value)
    }
}

fn store_out_buffer(me: &Dispatcher, value: &Bound<'_, PyAny>) {
    let is_empty = |o: &Bound<'_, PyAny>| o.len().is_ok_and(|n| n == 0);
    let now_empty = is_empty(value);
    let old = me.st().out_buffer.replace(value.clone().unbind());
    let was_empty = old.is_none_or(|o| is_empty(o.bind(value.py())));
    if was_empty != now_empty {
        me.notify.mark_dirty();
    }
}

/// `self.producer_fifo`.
pub fn producer_fifo_of<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    field_or_attr(
        slf,
        F_FIFO,
        |st| st.producer_fifo.as_ref(),
        intern!(slf.py(), "producer_fifo"),
    )
}

pub fn set_producer_fifo(slf: &Bound<'_, Dispatcher>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if Dispatcher::is_direct(slf, F_FIFO) {
        store_producer_fifo(slf.get(), value);
        Ok(())
    } else {
        slf.setattr(intern!(slf.py(), "producer_fifo"), value)
    }
}

fn store_producer_fifo(me: &Dispatcher, value: &Bound<'_, PyAny>) {
    if let Ok(f) = value.cast::<Fifo>() {
        f.get().set_owner(Some(me.notify.clone()));
    }
    let old = me.st().producer_fifo.replace(value.clone().unbind());
    if let Some(old) = old {
        if let Ok(f) = old.bind(value.py()).cast::<Fifo>() {
            f.get().set_owner(None);
        }
    }
    me.notify.mark_dirty();
}

/// CPython's message, naming the object's own class.
#[cold]
fn missing_attr(slf: &Bound<'_, Dispatcher>, name: impl std::fmt::Display) -> PyErr {
    let class = slf
        .get_type()
        .name()
        .map_or_else(|_| "dispatcher".to_owned(), |n| n.to_string());
    pyo3::exceptions::PyAttributeError::new_err(format!(
        "'{class}' object has no attribute '{name}'"
    ))
}

#[pymethods]
impl Dispatcher {
    // No text signature of its own: inspect.signature(cls) and help() then take the
    // class's from the Python `__init__` (CPython's parameters).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = None)]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> Self {
        Dispatcher {
            st: Mutex::new(State::default()),
            notify: Arc::new(ChannelNotify::default()),
            direct: AtomicU16::new(0),
            deferred: AtomicBool::new(false),
            batch_mode: AtomicU8::new(0),
            pipelined: AtomicBool::new(false),
        }
    }

    // ---- class attributes CPython defines on dispatcher ----
    #[classattr]
    fn debug() -> bool {
        false
    }
    #[classattr]
    fn closing() -> bool {
        false
    }
    #[classattr]
    fn addr(py: Python<'_>) -> Py<PyAny> {
        py.None()
    }
    #[classattr]
    fn ignore_log_types(py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(pyo3::types::PyFrozenSet::new(py, ["warning"])?
            .into_any()
            .unbind())
    }

    // ---- Rust-backed state ----
    #[getter(connected)]
    fn get_connected(&self) -> bool {
        self.st().connected
    }
    #[setter(connected)]
    fn set_connected_attr(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let v = v.is_truthy()?;
        // Batched output goes out first, as it would have under CPython.
        output_batch::flush(slf)?;
        slf.get().store_flag(|st| &mut st.connected, v, true);
        Ok(())
    }
    #[getter(accepting)]
    fn get_accepting(&self) -> bool {
        self.st().accepting
    }
    #[setter(accepting)]
    fn set_accepting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_flag(|st| &mut st.accepting, v.is_truthy()?, true);
        Ok(())
    }
    #[getter(connecting)]
    fn get_connecting(&self) -> bool {
        self.st().connecting
    }
    #[setter(connecting)]
    fn set_connecting_attr(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        self.store_flag(|st| &mut st.connecting, v.is_truthy()?, false);
        Ok(())
    }
    // Unset until __init__ (or the subclass) assigns them, as in CPython.
    #[getter(socket)]
    fn get_socket(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        output_batch::flush(slf)?;
        field(slf, |st| st.socket.as_ref(), "socket").map(Bound::unbind)
    }
    #[setter(socket)]
    fn set_socket_attr(slf: &Bound<'_, Self>, v: Py<PyAny>) -> PyResult<()> {
        // Batched output belongs to the old socket (STARTTLS swaps it).
        output_batch::flush(slf)?;
        slf.get().st().socket = Some(v);
        Ok(())
    }
    #[getter(_fileno)]
    fn get_fileno(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.fileno.as_ref(), "_fileno").map(Bound::unbind)
    }
    #[setter(_fileno)]
    fn set_fileno_attr(&self, v: Py<PyAny>) {
        self.st().fileno = Some(v);
    }
    #[getter(_rs_out_buffer)]
    fn get_out_buffer(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        field(slf, |st| st.out_buffer.as_ref(), "out_buffer").map(Bound::unbind)
    }
    #[setter(_rs_out_buffer)]
    fn set_out_buffer_attr(&self, v: &Bound<'_, PyAny>) {
        store_out_buffer(self, v);
    }
    #[getter(_rs_ac_in_buffer)]
    fn get_ac_in_buffer<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.st().in_data())
    }
    #[setter(_rs_ac_in_buffer)]
    fn set_ac_in_buffer(&self, v: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = async_chat::bytes_like(v)?;
        self.st().set_in_data(&bytes);
        Ok(())
    }
    #[getter(_rs_producer_fifo)]
    fn get_producer_fifo(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        output_batch::flush(slf)?;
        field(slf, |st| st.producer_fifo.as_ref(), "producer_fifo").map(Bound::unbind)
    }
    #[setter(_rs_producer_fifo)]
    fn set_producer_fifo_attr(slf: &Bound<'_, Self>, v: &Bound<'_, PyAny>) -> PyResult<()> {
        // Batched output is in the old fifo.
        output_batch::flush(slf)?;
        store_producer_fifo(slf.get(), v);
        Ok(())
    }

    // ---- construction ----
    // Called by the `__init__` that asyncore.py defines in Python: a #[pymethods]
    // `__init__` is a slot wrapper, which inspect.signature() shows as (*args, **kwargs).
    #[pyo3(signature = (sock=None, map=None))]
    fn _init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        dispatcher_init(slf, sock, map)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        let py = slf.py();
        let cls = slf.get_type();
        let mut status = vec![format!(
            "{}.{}",
            cls.getattr(intern!(py, "__module__"))?.str()?,
            cls.getattr(intern!(py, "__qualname__"))?.str()?
        )];
        let addr = slf.getattr(intern!(py, "addr"))?;
        if accepting(slf)? && addr.is_truthy()? {
            status.push("listening".into());
        } else if connected(slf)? {
            status.push("connected".into());
        }
        if !addr.is_none() {
            match PyString::new(py, "%s:%d").rem(&addr) {
                Ok(s) => status.push(s.str()?.to_string()),
                Err(e) if e.is_instance_of::<PyTypeError>(py) => {
                    status.push(addr.repr()?.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(format!(
            "<{} at {:#x}>",
            status.join(" "),
            slf.as_ptr() as usize
        ))
    }

    #[pyo3(signature = (map=None))]
    fn add_channel(slf: &Bound<'_, Self>, map: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let map = match map {
            Some(m) => m.clone(),
            None => slf.getattr(intern!(py, "_map"))?,
        };
        let fd = slf.getattr(intern!(py, "_fileno"))?;
        map_write(&map, &fd, Some(slf.as_any()))
    }

    #[pyo3(signature = (map=None))]
    fn del_channel(slf: &Bound<'_, Self>, map: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        output_batch::flush(slf)?;
        let fd = slf.getattr(intern!(py, "_fileno"))?;
        let map = match map {
            Some(m) => m.clone(),
            None => slf.getattr(intern!(py, "_map"))?,
        };
        // Unregister from the poller before the socket can be closed (the
        // polling crate's contract), then do what CPython does.
        slf.get().notify.unregister();
        if map.contains(&fd)? {
            map_write(&map, &fd, None)?;
        }
        slf.setattr(intern!(py, "_fileno"), py.None())
    }

    // CPython's defaults: socket.AF_INET, socket.SOCK_STREAM.
    #[pyo3(
        signature = (family = py_int(libc::AF_INET), r#type = py_int(libc::SOCK_STREAM)),
        text_signature = "($self, family=socket.AF_INET, type=socket.SOCK_STREAM)"
    )]
    fn create_socket(slf: &Bound<'_, Self>, family: Py<PyAny>, r#type: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let (family, r#type) = (family.bind(py), r#type.bind(py));
        slf.setattr(
            intern!(py, "family_and_type"),
            PyTuple::new(py, [family, r#type])?,
        )?;
        let socket_mod = global(py, intern!(py, "socket"))?;
        let sock = socket_mod.call_method1(intern!(py, "socket"), (family, r#type))?;
        sock.call_method1(intern!(py, "setblocking"), (false,))?;
        slf.call_method1(intern!(py, "set_socket"), (sock,))?;
        Ok(())
    }

    #[pyo3(signature = (sock, map=None))]
    fn set_socket(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        slf.setattr(intern!(py, "socket"), sock)?;
        let fd = sock.call_method0(intern!(py, "fileno"))?;
        slf.setattr(intern!(py, "_fileno"), fd)?;
        slf.call_method1(intern!(py, "add_channel"), (map,))?;
        Ok(())
    }

    fn set_reuse_addr(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let attempt = || -> PyResult<()> {
            let socket_mod = global(py, intern!(py, "socket"))?;
            let level = socket_mod.getattr(intern!(py, "SOL_SOCKET"))?;
            let opt = socket_mod.getattr(intern!(py, "SO_REUSEADDR"))?;
            let sock = slf.getattr(intern!(py, "socket"))?;
            let cur = sock.call_method1(intern!(py, "getsockopt"), (&level, &opt))?;
            sock.call_method1(intern!(py, "setsockopt"), (&level, &opt, cur.bitor(1)?))?;
            Ok(())
        };
        match attempt() {
            Err(e) if e.is_instance_of::<PyOSError>(py) => Ok(()),
            other => other,
        }
    }

    fn readable(&self) -> bool {
        true
    }

    fn writable(&self) -> bool {
        true
    }

    fn listen<'py>(slf: &Bound<'py, Self>, num: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        set_accepting(slf, true)?;
        let mut num = num.clone();
        if is_windows(py)? && num.gt(5)? {
            num = 5i32.into_pyobject(py)?.into_any();
        }
        socket_of(slf)?.call_method1(intern!(py, "listen"), (num,))
    }

    fn bind<'py>(slf: &Bound<'py, Self>, addr: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        slf.setattr(intern!(py, "addr"), addr)?;
        socket_of(slf)?.call_method1(intern!(py, "bind"), (addr,))
    }

    fn connect(slf: &Bound<'_, Self>, address: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        set_connected(slf, false)?;
        set_connecting(slf, true)?;
        let err: i32 = socket_of(slf)?
            .call_method1(intern!(py, "connect_ex"), (address,))?
            .extract()?;
        if matches!(err, libc::EINPROGRESS | libc::EALREADY | libc::EWOULDBLOCK)
            || (err == libc::EINVAL && is_windows(py)?)
        {
            return slf.setattr(intern!(py, "addr"), address);
        }
        if err == 0 || err == libc::EISCONN {
            slf.setattr(intern!(py, "addr"), address)?;
            slf.call_method0(intern!(py, "handle_connect_event"))?;
            return Ok(());
        }
        let name = global(py, intern!(py, "errorcode"))?.get_item(err)?;
        Err(os_error_with(py, err, &name.str()?.to_string()))
    }

    fn accept<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let pair = match socket_of(slf)?.call_method0(intern!(py, "accept")) {
            Ok(p) => p,
            Err(e) if e.is_instance_of::<PyTypeError>(py) => return Ok(py.None().into_bound(py)),
            Err(e) => {
                return match errno_of(py, &e) {
                    Some(libc::EWOULDBLOCK | libc::ECONNABORTED) => Ok(py.None().into_bound(py)),
                    _ => Err(e),
                }
            }
        };
        // `conn, addr = self.socket.accept()` sits inside CPython's try: a
        // result that does not unpack raises TypeError, which it swallows.
        match pair.extract::<(Bound<PyAny>, Bound<PyAny>)>() {
            Ok((conn, addr)) => Ok(PyTuple::new(py, [conn, addr])?.into_any()),
            Err(_) if pair.try_iter().is_err() => Ok(py.None().into_bound(py)),
            Err(_) => {
                let seq: Vec<Bound<PyAny>> = pair.try_iter()?.collect::<PyResult<_>>()?;
                Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "{} values to unpack (expected 2)",
                    if seq.len() > 2 {
                        "too many"
                    } else {
                        "not enough"
                    }
                )))
            }
        }
    }

    fn send<'py>(slf: &Bound<'py, Self>, data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        dispatcher_send(slf, data)
    }

    fn recv<'py>(
        slf: &Bound<'py, Self>,
        buffer_size: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let sock = socket_of(slf)?;
        match recv_bytes(py, &sock, buffer_size) {
            Ok(data) if data.is_truthy()? => Ok(data),
            Ok(_) => {
                slf.call_method0(intern!(py, "handle_close"))?;
                Ok(PyBytes::new(py, b"").into_any())
            }
            Err(e) => match errno_of(py, &e) {
                Some(errno) if is_disconnect(py, errno)? => {
                    slf.call_method0(intern!(py, "handle_close"))?;
                    Ok(PyBytes::new(py, b"").into_any())
                }
                _ => Err(e),
            },
        }
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        output_batch::flush(slf)?;
        set_connected(slf, false)?;
        set_accepting(slf, false)?;
        set_connecting(slf, false)?;
        slf.call_method0(intern!(py, "del_channel"))?;
        let sock = socket_of(slf)?;
        if !sock.is_none() {
            if let Err(e) = sock.call_method0(intern!(py, "close")) {
                if !matches!(errno_of(py, &e), Some(libc::ENOTCONN | libc::EBADF)) {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn log(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        let stderr = global(py, intern!(py, "sys"))?.getattr(intern!(py, "stderr"))?;
        stderr.call_method1(
            intern!(py, "write"),
            (format!("log: {}\n", message.str()?),),
        )?;
        Ok(())
    }

    #[pyo3(signature = (message, r#type = py_str("info")), text_signature = "($self, message, type='info')")]
    fn log_info(
        slf: &Bound<'_, Self>,
        message: &Bound<'_, PyAny>,
        r#type: Py<PyAny>,
    ) -> PyResult<()> {
        let py = slf.py();
        let kind = r#type.into_bound(py);
        if !slf
            .getattr(intern!(py, "ignore_log_types"))?
            .contains(&kind)?
        {
            let line = format!("{}: {}", kind.str()?, message.str()?);
            py.import("builtins")?
                .getattr(intern!(py, "print"))?
                .call1((line,))?;
        }
        Ok(())
    }

    fn handle_read_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::read_event(slf)
    }

    fn handle_write_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::write_event(slf)
    }

    fn handle_connect_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let err = so_error(slf)?;
        if err.is_truthy()? {
            let msg = crate::errors::strerror(py, &err)?;
            let exc = py.get_type::<PyOSError>().call1((err, msg))?;
            return Err(PyErr::from_value(exc));
        }
        slf.call_method0(intern!(py, "handle_connect"))?;
        set_connected(slf, true)?;
        set_connecting(slf, false)
    }

    fn handle_expt_event(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        if so_error(slf)?.is_truthy()? {
            slf.call_method0(intern!(py, "handle_close"))?;
        } else {
            slf.call_method0(intern!(py, "handle_expt"))?;
        }
        Ok(())
    }

    fn handle_error(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let ct = global(py, intern!(py, "compact_traceback"))?.call0()?;
        let (_nil, t, v, tbinfo): (Bound<PyAny>, Bound<PyAny>, Bound<PyAny>, Bound<PyAny>) =
            ct.extract()?;
        let self_repr = match slf.repr() {
            Ok(r) => r.to_string(),
            Err(_) => format!(
                "<__repr__(self) failed for object at {:x}>",
                slf.as_ptr() as usize
            ),
        };
        let msg = format!(
            "uncaptured python exception, closing channel {} ({}:{} {})",
            self_repr,
            t.str()?,
            v.str()?,
            tbinfo.str()?
        );
        slf.call_method1(intern!(py, "log_info"), (msg, "error"))?;
        slf.call_method0(intern!(py, "handle_close"))?;
        Ok(())
    }

    fn handle_expt(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled incoming priority event"))
    }

    fn handle_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled read event"))
    }

    fn handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled write event"))
    }

    fn handle_connect(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled connect event"))
    }

    fn handle_accept(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let pair = slf.call_method0(intern!(py, "accept"))?;
        if !pair.is_none() {
            // CPython: self.handle_accepted(*pair)
            let args = pair.try_iter()?.collect::<PyResult<Vec<_>>>()?;
            if let [sock, addr] = args.as_slice() {
                crate::calls::call_method2(slf, intern!(py, "handle_accepted"), sock, addr)?;
            } else {
                slf.call_method1(intern!(py, "handle_accepted"), PyTuple::new(py, args)?)?;
            }
        }
        Ok(())
    }

    fn handle_accepted(
        slf: &Bound<'_, Self>,
        sock: &Bound<'_, PyAny>,
        addr: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let _ = addr;
        sock.call_method0(intern!(slf.py(), "close"))?;
        warn_unhandled(slf, intern!(slf.py(), "unhandled accepted event"))
    }

    fn handle_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        warn_unhandled(slf, intern!(slf.py(), "unhandled close event"))?;
        slf.call_method0(intern!(slf.py(), "close"))?;
        Ok(())
    }

    // ---- dispatcher_with_send ----
    #[pyo3(signature = (sock=None, map=None))]
    fn _ws_init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        dispatcher_init(slf, sock, map)?;
        set_out_buffer(slf, PyBytes::new(slf.py(), b"").as_any())
    }

    fn _ws_initiate_send(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let buf = out_buffer_of(slf)?;
        let chunk = if buf.is_exact_instance_of::<PyBytes>() && buf.len()? <= 65536 {
            // `buf[:65536]` of a short bytes object is the object itself.
            buf.clone()
        } else {
            buf.get_item(pyo3::types::PySlice::new(py, 0, 65536, 1))?
        };
        let num_sent = dispatcher_send(slf, &chunk)?;
        let rest = slice_from(&out_buffer_of(slf)?, &num_sent)?;
        set_out_buffer(slf, &rest)
    }

    fn _ws_handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(intern!(slf.py(), "initiate_send"))?;
        Ok(())
    }

    fn _ws_writable<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        if !connected(slf)? {
            return Ok(true.into_pyobject(py)?.to_owned().into_any());
        }
        Ok(out_buffer_of(slf)?.len()?.into_pyobject(py)?.into_any())
    }

    fn _ws_send(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        if slf.getattr(intern!(py, "debug"))?.is_truthy()? {
            let msg = format!("sending {}", data.repr()?);
            slf.call_method1(intern!(py, "log_info"), (msg,))?;
        }
        let buf = out_buffer_of(slf)?;
        let builtin_send = has_builtin(
            slf,
            intern!(py, "initiate_send"),
            intern!(py, "_ws_initiate_send"),
        );
        let empty = buf.len().is_ok_and(|n| n == 0);
        if empty && builtin_send && data.is_exact_instance_of::<PyBytes>() {
            if let Some(rest) = send_whole(slf, data)? {
                // What CPython's out_buffer holds after its one send attempt.
                set_out_buffer(slf, &rest)?;
                if rest.is(data) {
                    // Nothing went out: CPython's path, with its error handling.
                    return Self::_ws_initiate_send(slf);
                }
            }
            return Ok(());
        }
        let joined = if empty && data.is_exact_instance_of::<PyBytes>() {
            data.clone()
        } else {
            buf.add(data)?
        };
        set_out_buffer(slf, &joined)?;
        if builtin_send {
            return Self::_ws_initiate_send(slf);
        }
        slf.call_method0(intern!(py, "initiate_send"))?;
        Ok(())
    }

    // ---- async_chat ----
    #[pyo3(signature = (sock=None, map=None))]
    fn _ac_init(
        slf: &Bound<'_, Self>,
        sock: Option<&Bound<'_, PyAny>>,
        map: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        async_chat::init(slf)?;
        dispatcher_init(slf, sock, map)
    }
    fn _ac_collect_incoming_data(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let _ = data;
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "must be implemented in subclass",
        ))
    }
    fn _ac_found_terminator(&self) -> PyResult<()> {
        Err(pyo3::exceptions::PyNotImplementedError::new_err(
            "must be implemented in subclass",
        ))
    }
    #[pyo3(name = "_ac__collect_incoming_data")]
    fn ac_private_collect_incoming_data(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let incoming = slf.getattr(intern!(slf.py(), "incoming"))?;
        crate::calls::call_method1(&incoming, intern!(slf.py(), "append"), data)?;
        Ok(())
    }
    #[pyo3(name = "_ac__get_data")]
    fn ac_private_get_data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        async_chat::get_data(slf)
    }
    fn _ac_set_terminator(slf: &Bound<'_, Self>, term: &Bound<'_, PyAny>) -> PyResult<()> {
        async_chat::set_terminator(slf, term)
    }
    fn _ac_get_terminator<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.getattr(intern!(slf.py(), "terminator"))
    }
    fn _ac_handle_read(slf: &Bound<'_, Self>) -> PyResult<()> {
        async_chat::handle_read(slf)
    }
    fn _ac_handle_write(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(intern!(slf.py(), "initiate_send"))?;
        Ok(())
    }
    fn _ac_handle_close(slf: &Bound<'_, Self>) -> PyResult<()> {
        slf.call_method0(intern!(slf.py(), "close"))?;
        Ok(())
    }
    fn _ac_push(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        async_chat::push(slf, data)
    }
    fn _ac_push_with_producer(slf: &Bound<'_, Self>, producer: &Bound<'_, PyAny>) -> PyResult<()> {
        crate::fifo::append(&producer_fifo_of(slf)?, producer)?;
        slf.call_method0(intern!(slf.py(), "initiate_send"))?;
        Ok(())
    }
    fn _ac_readable(&self) -> i32 {
        1
    }
    fn _ac_writable<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        output_batch::flush(slf)?;
        let fifo = producer_fifo_of(slf)?;
        if fifo.is_truthy()? {
            return Ok(fifo);
        }
        Ok((!connected(slf)?)
            .into_pyobject(slf.py())?
            .to_owned()
            .into_any())
    }
    fn _ac_close_when_done(slf: &Bound<'_, Self>) -> PyResult<()> {
        crate::fifo::append(
            &producer_fifo_of(slf)?,
            &slf.py().None().into_bound(slf.py()),
        )
    }
    fn _ac_initiate_send(slf: &Bound<'_, Self>) -> PyResult<()> {
        async_chat::initiate_send(slf)
    }
    fn _ac_discard_buffers(slf: &Bound<'_, Self>) -> PyResult<()> {
        output_batch::flush(slf)?;
        async_chat::discard_buffers(slf)
    }
}

/// `map[key] = value` / `del map[key]`. On our own `SocketMap` (exactly that
/// type) this is what its `__setitem__`/`__delitem__` do, without the two
/// Python calls: the dict write plus the note of the key for the loop.
fn map_write(
    map: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    value: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = map.py();
    let ours = global(py, intern!(py, "SocketMap")).is_ok_and(|t| map.get_type().is(&t));
    if let (true, Ok(d)) = (ours, map.cast::<PyDict>()) {
        let touched = map.getattr(intern!(py, "_touched"))?;
        let touched = touched.cast::<pyo3::types::PyList>()?;
        // PyDict_SetItem/DelItem on the dict itself, as dict.__setitem__ does.
        match value {
            Some(v) => dict_set_raw(d, key, v)?,
            None => dict_del_raw(d, key)?,
        }
        if touched.len() > 1024 {
            // Nobody polls this map: one "re-read everything" mark (SocketMap._note).
            touched.del_slice(0, touched.len())?;
            touched.append(map)?;
        } else {
            touched.append(key)?;
        }
        return Ok(());
    }
    match value {
        Some(v) => map.set_item(key, v),
        None => map.del_item(key),
    }
}

fn dict_set_raw(
    d: &Bound<'_, PyDict>,
    key: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: GIL held; PyDict_SetItem does not steal references.
    let rc = unsafe { pyo3::ffi::PyDict_SetItem(d.as_ptr(), key.as_ptr(), v.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}

fn dict_del_raw(d: &Bound<'_, PyDict>, key: &Bound<'_, PyAny>) -> PyResult<()> {
    // SAFETY: GIL held.
    let rc = unsafe { pyo3::ffi::PyDict_DelItem(d.as_ptr(), key.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(d.py()))
    }
}

/// A default argument value (defaults are built when a call omits them).
pub fn py_str(s: &str) -> Py<PyAny> {
    Python::attach(|py| PyString::new(py, s).into_any().unbind())
}

pub fn py_int(i: i32) -> Py<PyAny> {
    Python::attach(|py| {
        i.into_pyobject(py)
            .map_or_else(|_| py.None(), |v| v.into_any().unbind())
    })
}

/// CPython's `dispatcher.__init__(self, sock=None, map=None)`.
fn dispatcher_init(
    slf: &Bound<'_, Dispatcher>,
    sock: Option<&Bound<'_, PyAny>>,
    map: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    let the_map = match map {
        Some(m) => m.clone(),
        None => global(py, intern!(py, "socket_map"))?,
    };
    slf.setattr(intern!(py, "_map"), the_map)?;
    slf.setattr(intern!(py, "_fileno"), py.None())?;
    let sock = match sock {
        Some(s) if s.is_truthy()? => s,
        _ => return slf.setattr(intern!(py, "socket"), py.None()),
    };
    // Set to non-blocking just to make sure, for sockets from a blocking source.
    sock.call_method1(intern!(py, "setblocking"), (false,))?;
    slf.call_method1(intern!(py, "set_socket"), (sock, map))?;
    set_connected(slf, true)?;
    match sock.call_method0(intern!(py, "getpeername")) {
        Ok(addr) => slf.setattr(intern!(py, "addr"), addr),
        Err(e) => match errno_of(py, &e) {
            Some(libc::ENOTCONN | libc::EINVAL) => set_connected(slf, false),
            Some(_) => {
                slf.call_method1(intern!(py, "del_channel"), (map,))?;
                Err(e)
            }
            None => Err(e),
        },
    }
}

/// `dispatcher_with_send.send(data)` with an empty out_buffer on a plain
/// socket: one direct send of `data` (bytes no longer than 65536, as
/// CPython's `initiate_send` slices). None when all of it went out (the buffer
/// stays empty, no interest change); else the buffer CPython would now hold.
fn send_whole<'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = slf.py();
    let Ok(bytes) = data.cast::<PyBytes>() else {
        return Ok(Some(data.clone()));
    };
    let raw = bytes.as_bytes();
    if raw.is_empty() || raw.len() > 65536 {
        return Ok(Some(data.clone()));
    }
    let Some(fd) = crate::sockio::plain_fd(py, &socket_of(slf)?) else {
        return Ok(Some(data.clone()));
    };
    match crate::sockio::send_direct(py, fd, raw) {
        crate::sockio::Direct::Done(n) if n == raw.len() => Ok(None),
        crate::sockio::Direct::Done(n) => Ok(Some(PyBytes::new(py, &raw[n..]).into_any())),
        // Would block, or failed: leave it all to CPython's path, which makes
        // its own attempt and handles the error as it does.
        _ => Ok(Some(data.clone())),
    }
}

/// The base `dispatcher.send`, whatever a subclass made of `send`.
pub fn dispatcher_send<'py>(
    slf: &Bound<'py, Dispatcher>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let sock = socket_of(slf)?;
    match send_obj(py, &sock, data) {
        Ok(n) => Ok(n),
        Err(e) => match errno_of(py, &e) {
            Some(libc::EWOULDBLOCK) => Ok(0i32.into_pyobject(py)?.into_any()),
            Some(errno) if is_disconnect(py, errno)? => {
                slf.call_method0(intern!(py, "handle_close"))?;
                Ok(0i32.into_pyobject(py)?.into_any())
            }
            _ => Err(e),
        },
    }
}

/// `obj[start:]`.
pub fn slice_from<'py>(
    obj: &Bound<'py, PyAny>,
    start: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    if let (Ok(b), Ok(i)) = (obj.cast_exact::<PyBytes>(), start.extract::<usize>()) {
        let data = b.as_bytes();
        return Ok(PyBytes::new(py, data.get(i..).unwrap_or_default()).into_any());
    }
    obj.get_item(make_slice(py, start, &py.None().into_bound(py))?)
}

/// `slice(start, stop)` for any objects (what `obj[start:stop]` builds).
pub fn make_slice<'py>(
    py: Python<'py>,
    start: &Bound<'py, PyAny>,
    stop: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: GIL held; PySlice_New returns a new reference or NULL with an error set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PySlice_New(start.as_ptr(), stop.as_ptr(), std::ptr::null_mut()),
        )
    }
}

fn so_error<'py>(slf: &Bound<'py, Dispatcher>) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let socket_mod = global(py, intern!(py, "socket"))?;
    let level = socket_mod.getattr(intern!(py, "SOL_SOCKET"))?;
    let opt = socket_mod.getattr(intern!(py, "SO_ERROR"))?;
    socket_of(slf)?.call_method1(intern!(py, "getsockopt"), (level, opt))
}

/// `self.log_info(what, 'warning')`, with interned strings: the default
/// handle_close logs one per connection (and CPython ignores it by default).
fn warn_unhandled(slf: &Bound<'_, Dispatcher>, what: &Bound<'_, PyString>) -> PyResult<()> {
    let py = slf.py();
    crate::calls::call_method2(slf, intern!(py, "log_info"), what, intern!(py, "warning"))?;
    Ok(())
}

fn is_windows(py: Python<'_>) -> PyResult<bool> {
    let name = global(py, intern!(py, "os"))?.getattr(intern!(py, "name"))?;
    name.eq("nt")
}

/// Whether `obj.<public>` resolves to our Rust method registered as `<private>`
/// on `dispatcher` (not overridden by a subclass, nor in the instance dict).
/// The class lookup hits CPython's type attribute cache.
pub fn has_builtin(
    obj: &Bound<'_, Dispatcher>,
    public: &Bound<'_, PyString>,
    private: &Bound<'_, PyString>,
) -> bool {
    let Some(ours) = our_method(obj.py(), private) else {
        return false;
    };
    let Ok(seen) = obj.get_type().getattr(public) else {
        return false;
    };
    seen.as_ptr() == ours && !instance_dict_has(obj, public)
}

/// The address of `dispatcher.<private>`, for identity tests. Cached by the
/// (interned, immortal) name's address; the cache keeps our methods alive.
fn our_method(py: Python<'_>, private: &Bound<'_, PyString>) -> Option<*mut pyo3::ffi::PyObject> {
    static OURS: Mutex<Vec<(usize, Py<PyAny>)>> = Mutex::new(Vec::new());
    let key = private.as_ptr() as usize;
    {
        let ours = OURS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, m)) = ours.iter().find(|(k, _)| *k == key) {
            return Some(m.as_ptr());
        }
    }
    let m = py.get_type::<Dispatcher>().getattr(private).ok()?;
    let ptr = m.as_ptr();
    // Only interned names are cached (a name object that could die and have
    // its address reused must not be a key).
    if private.as_ptr() == PyString::intern(py, &private.to_cow().ok()?).as_ptr() {
        OURS.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((key, m.unbind()));
        return Some(ptr);
    }
    // Uncached: `m` dies here, but dispatcher's own attribute keeps it alive.
    Some(ptr)
}
