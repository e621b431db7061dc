//! Owns asynchat's producer fifo and `simple_producer`.
//!
//! `fifo` is the Python 2 API the asynchat docs describe (`is_empty`, `first`,
//! `push`, `pop` -> `(1, item)` / `(0, None)`) and is also what
//! `async_chat.producer_fifo` is, so it answers the deque operations code uses
//! on that attribute in 3.x (`append`, `appendleft`, `popleft`, `[0]`, `del
//! [0]`, `len`, truth, `clear`, iteration). It tells its channel when it turns
//! empty or non-empty, which is what the channel's poll interest depends on.
//!
//! Uses: calls, errors, gil_cell, names, pyobj.

use std::collections::VecDeque;

use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple, PyWeakrefReference};

use pyo3::{PyTraverseError, PyVisit};

use crate::errors::missing_attr;
use crate::gil_cell::{GilCell, GilRef};
use crate::names;
use crate::pyobj::{make_slice, Built};

#[pyclass(frozen, subclass, dict, weakref, module = "asynchat", name = "fifo")]
pub struct Fifo {
    /// Checked first by `__traverse__` (see pyobj.rs `Built`).
    built: Built,
    items: GilCell<VecDeque<Py<PyAny>>>,
    owner: GilCell<Option<FifoOwner>>,
}

/// The channel whose `producer_fifo` a fifo is, and how to tell it of an
/// emptiness change. A weak reference: the channel holds the fifo, and a
/// strong one back would make every async_chat a reference cycle (freed only
/// by the collector, where CPython's deque frees it at once). The callback
/// is the channel module's (above this one), given by the channel.
pub struct FifoOwner {
    channel: Py<PyWeakrefReference>,
    /// The owner's identity for `disown`, comparable when the weak reference
    /// is already dead (the collector clears those before `__clear__`).
    id: usize,
    changed: fn(&Bound<'_, PyAny>),
}

impl FifoOwner {
    pub fn new(
        channel: &Bound<'_, PyAny>,
        id: usize,
        changed: fn(&Bound<'_, PyAny>),
    ) -> PyResult<Self> {
        Ok(FifoOwner {
            channel: PyWeakrefReference::new(channel)?.unbind(),
            id,
            changed,
        })
    }
}

impl Fifo {
    fn items(&self, py: Python<'_>) -> GilRef<'_, VecDeque<Py<PyAny>>> {
        self.items.borrow(py)
    }

    /// Sets the channel to tell; the previous owner's weak reference is
    /// dropped after the lock.
    pub fn set_owner(&self, py: Python<'_>, owner: Option<FifoOwner>) {
        let old = std::mem::replace(&mut *self.owner(py), owner);
        drop(old);
    }

    /// Forgets the owner if it is the channel `id` (which let go of the fifo).
    pub fn disown(&self, py: Python<'_>, id: usize) {
        let old = {
            let mut owner = self.owner(py);
            if owner.as_ref().is_some_and(|o| o.id == id) {
                owner.take()
            } else {
                None
            }
        };
        drop(old);
    }

    fn owner(&self, py: Python<'_>) -> GilRef<'_, Option<FifoOwner>> {
        self.owner.borrow(py)
    }

    /// Tells the owner, if it is alive, that the fifo turned empty or
    /// non-empty. Called without the fifo's locks held.
    fn tell_owner(&self, py: Python<'_>) {
        let owner = self
            .owner(py)
            .as_ref()
            .and_then(|o| Some((o.channel.bind(py).upgrade()?, o.changed)));
        if let Some((channel, changed)) = owner {
            changed(&channel);
        }
    }

    /// Runs `f` on the items and tells the owner if emptiness changed.
    /// The removed items are dropped after the lock is released (their
    /// destructors may run Python code).
    pub fn edit<R>(&self, py: Python<'_>, f: impl FnOnce(&mut VecDeque<Py<PyAny>>) -> R) -> R {
        let (r, was, now) = {
            let mut items = self.items(py);
            let was = items.is_empty();
            let r = f(&mut items);
            (r, was, items.is_empty())
        };
        if was != now {
            self.tell_owner(py);
        }
        r
    }

    pub fn empty() -> Self {
        Fifo {
            built: Built::new(),
            items: GilCell::new(VecDeque::new()),
            owner: GilCell::new(None),
        }
    }

    pub fn len(&self, py: Python<'_>) -> usize {
        self.items(py).len()
    }

    pub fn front(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.items(py).front().map(|o| o.clone_ref(py))
    }

    fn index(&self, py: Python<'_>, i: isize) -> PyResult<usize> {
        let n = self.len(py) as isize;
        let j = if i < 0 { i + n } else { i };
        if j < 0 || j >= n {
            return Err(PyIndexError::new_err("deque index out of range"));
        }
        Ok(j as usize)
    }
}

/// `fifo.append(item)` for our fifo, or the method call for anything else.
pub fn append(fifo: &Bound<'_, PyAny>, item: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(f) = fifo.cast::<Fifo>() {
        let item = item.clone().unbind();
        f.get().edit(fifo.py(), |d| d.push_back(item));
        return Ok(());
    }
    crate::calls::call_method1(fifo, names::append(fifo.py()), item)?;
    Ok(())
}

#[pymethods]
impl Fifo {
    #[new]
    #[pyo3(signature = (list=None))]
    fn new(list: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let mut items = VecDeque::new();
        if let Some(list) = list {
            // Python 2's fifo: `if not list: deque() else: deque(list)`.
            if list.is_truthy()? {
                for item in list.try_iter()? {
                    items.push_back(item?.unbind());
                }
            }
        }
        Ok(Fifo {
            built: Built::new(),
            items: GilCell::new(items),
            owner: GilCell::new(None),
        })
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.len(py)
    }

    fn __bool__(&self, py: Python<'_>) -> bool {
        !self.items(py).is_empty()
    }

    pub fn is_empty(&self, py: Python<'_>) -> bool {
        self.items(py).is_empty()
    }

    fn first(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.front(py)
            .ok_or_else(|| PyIndexError::new_err("deque index out of range"))
    }

    fn push(&self, py: Python<'_>, data: Py<PyAny>) {
        self.edit(py, |d| d.push_back(data));
    }

    fn append(&self, py: Python<'_>, data: Py<PyAny>) {
        self.edit(py, |d| d.push_back(data));
    }

    fn appendleft(&self, py: Python<'_>, data: Py<PyAny>) {
        self.edit(py, |d| d.push_front(data));
    }

    fn extend(&self, items: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = items.py();
        let items: Vec<Py<PyAny>> = items
            .try_iter()?
            .map(|i| i.map(Bound::unbind))
            .collect::<PyResult<_>>()?;
        self.edit(py, |d| d.extend(items));
        Ok(())
    }

    /// The fifo API: `(1, first item)` removed, or `(0, None)` when empty.
    fn pop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self.edit(py, VecDeque::pop_front) {
            Some(item) => PyTuple::new(
                py,
                [1i32.into_pyobject(py)?.into_any(), item.into_bound(py)],
            ),
            None => PyTuple::new(
                py,
                [0i32.into_pyobject(py)?.into_any(), py.None().into_bound(py)],
            ),
        }
    }

    fn popleft(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.edit(py, VecDeque::pop_front)
            .ok_or_else(|| PyIndexError::new_err("pop from an empty deque"))
    }

    fn clear(&self, py: Python<'_>) {
        let old = self.edit(py, std::mem::take);
        drop(old);
    }

    fn __getitem__(&self, py: Python<'_>, i: isize) -> PyResult<Py<PyAny>> {
        let j = self.index(py, i)?;
        Ok(self.items(py)[j].clone_ref(py))
    }

    fn __setitem__(&self, py: Python<'_>, i: isize, value: Py<PyAny>) -> PyResult<()> {
        let j = self.index(py, i)?;
        let old = std::mem::replace(&mut self.items(py)[j], value);
        drop(old);
        Ok(())
    }

    fn __delitem__(&self, py: Python<'_>, i: isize) -> PyResult<()> {
        let j = self.index(py, i)?;
        let old = self.edit(py, |d| d.remove(j));
        drop(old);
        Ok(())
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let list = PyList::new(py, self.items(py).iter().map(|o| o.clone_ref(py)))?;
        Ok(list.try_iter()?.into_any().unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let list = PyList::new(py, self.items(py).iter().map(|o| o.clone_ref(py)))?;
        Ok(format!("fifo({})", list.repr()?))
    }

    /// Every item (producers that refer back to their channel, a fifo that
    /// contains itself...). Nothing if the items are borrowed (gil_cell.rs).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if !self.built.get() {
            return Ok(());
        }
        // SAFETY: the collector calls tp_traverse from a thread attached to
        // the interpreter, holding the GIL.
        let py = unsafe { Python::assume_attached() };
        if let Some(items) = self.items.try_borrow(py) {
            for item in items.iter() {
                visit.call(item)?;
            }
        }
        if let Some(owner) = self.owner.try_borrow(py) {
            visit.call(owner.as_ref().map(|o| &o.channel))?;
        }
        Ok(())
    }

    /// Empties the fifo, as the collector empties a `collections.deque`
    /// (CPython's deque_clear): it stays usable, and empty.
    fn __clear__(&self, py: Python<'_>) {
        let Some(mut items) = self.items.try_borrow(py) else {
            return;
        };
        let old = std::mem::take(&mut *items);
        drop(items);
        if !old.is_empty() {
            self.tell_owner(py);
        }
        drop(old);
    }
}

/// `asynchat.simple_producer(data, buffer_size=512)`.
///
/// `data` and `buffer_size` are CPython's instance attributes; they are unset
/// only after the garbage collector cleared the object (`__clear__`), and
/// then reading them raises AttributeError, as it does in CPython once the
/// collector emptied the instance `__dict__`.
#[pyclass(subclass, dict, weakref, module = "asynchat", name = "simple_producer")]
pub struct SimpleProducer {
    data: Option<Py<PyAny>>,
    buffer_size: Option<Py<PyAny>>,
}

impl SimpleProducer {
    fn attr<'py>(
        slf: &Bound<'py, Self>,
        pick: impl FnOnce(&Self) -> Option<&Py<PyAny>>,
        name: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let me = slf.try_borrow()?;
        match pick(&me) {
            Some(v) => Ok(v.bind(py).clone()),
            None => Err(missing_attr(slf.as_any(), name)),
        }
    }
}

#[pymethods]
impl SimpleProducer {
    // Any arguments, as dispatcher's: a subclass's `__init__` may take others and
    // call `simple_producer.__init__(self, data)`, which sets the attributes.
    // No text signature of its own: inspect.signature(cls) and help() then take the
    // class's from the Python `__init__` (CPython's parameters).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs), text_signature = None)]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        SimpleProducer {
            data: Some(pyo3::types::PyBytes::new(py, b"").into_any().unbind()),
            buffer_size: Some(crate::pyobj::py_int(512)),
        }
    }

    /// Called by the `__init__` that asynchat.py defines in Python (for CPython's signature).
    #[pyo3(
        signature = (data, buffer_size = crate::pyobj::py_int(512)),
        text_signature = "($self, data, buffer_size=512)"
    )]
    fn _init(&mut self, data: Py<PyAny>, buffer_size: Py<PyAny>) {
        self.data = Some(data);
        self.buffer_size = Some(buffer_size);
    }

    #[getter]
    fn data<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::attr(slf, |me| me.data.as_ref(), "data")
    }

    #[setter]
    fn set_data(&mut self, value: Py<PyAny>) {
        self.data = Some(value);
    }

    #[getter]
    fn buffer_size<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        Self::attr(slf, |me| me.buffer_size.as_ref(), "buffer_size")
    }

    #[setter]
    fn set_buffer_size(&mut self, value: Py<PyAny>) {
        self.buffer_size = Some(value);
    }

    fn more<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let data = Self::data(slf)?;
        let size = Self::buffer_size(slf)?;
        // The borrow is not held across these calls: `len()`, the comparison
        // and the slicing run Python code, which may touch this producer.
        if data.len()?.into_pyobject(py)?.gt(&size)? {
            let none = py.None().into_bound(py);
            let head = data.get_item(make_slice(py, &none, &size)?)?;
            let tail = data.get_item(make_slice(py, &size, &none)?)?;
            slf.try_borrow_mut()?.data = Some(tail.unbind());
            Ok(head)
        } else {
            slf.try_borrow_mut()?.data =
                Some(pyo3::types::PyBytes::new(py, b"").into_any().unbind());
            Ok(data)
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.data)?;
        visit.call(&self.buffer_size)
    }

    fn __clear__(&mut self) {
        self.data = None;
        self.buffer_size = None;
    }
}

// The fifo operations initiate_send performs on `producer_fifo`: in Rust on our
// fifo, the Python protocol on anything else a program put there.

/// `bool(fifo)`.
pub fn is_truthy(fifo: &Bound<'_, PyAny>) -> PyResult<bool> {
    match fifo.cast::<Fifo>() {
        Ok(f) => Ok(!f.get().is_empty(fifo.py())),
        Err(_) => fifo.is_truthy(),
    }
}

/// `fifo[0]`.
pub fn first<'py>(fifo: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = fifo.py();
    match fifo.cast::<Fifo>() {
        Ok(f) => f
            .get()
            .front(py)
            .map(|o| o.into_bound(py))
            .ok_or_else(|| PyIndexError::new_err("deque index out of range")),
        Err(_) => fifo.get_item(0),
    }
}

/// `del fifo[0]`.
pub fn del_first(fifo: &Bound<'_, PyAny>) -> PyResult<()> {
    match fifo.cast::<Fifo>() {
        Ok(f) => match f.get().edit(fifo.py(), VecDeque::pop_front) {
            Some(old) => {
                drop(old);
                Ok(())
            }
            None => Err(PyIndexError::new_err("deque index out of range")),
        },
        Err(_) => fifo.del_item(0),
    }
}

/// `fifo[0] = value`.
pub fn set_first(fifo: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match fifo.cast::<Fifo>() {
        Ok(f) => f.get().__setitem__(fifo.py(), 0, value.clone().unbind()),
        Err(_) => fifo.set_item(0, value),
    }
}

/// `fifo.appendleft(value)`.
pub fn push_front(fifo: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match fifo.cast::<Fifo>() {
        Ok(f) => {
            f.get().appendleft(fifo.py(), value.clone().unbind());
            Ok(())
        }
        Err(_) => fifo
            .call_method1(names::appendleft(fifo.py()), (value,))
            .map(drop),
    }
}
