//! Owns every Python name the Rust code reads, interned once, in one place
//! (as orjson's typeref.rs keeps its type and string references): method and
//! attribute names, and the globals of the asyncore module read at call
//! time. `names::handle_read(py)` is `intern!(py, "handle_read")`; the name
//! objects are immortal, which has_builtin's cache relies on. String values
//! (messages) stay where they are used.
//!
//! Uses nothing from the crate.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

macro_rules! names {
    ($($(#[$attr:meta])* $f:ident = $s:literal,)*) => {
        $(
            $(#[$attr])*
            #[inline]
            pub fn $f(py: Python<'_>) -> &Bound<'_, PyString> {
                intern!(py, $s)
            }
        )*
    };
}

names! {
    ac_batch_output = "ac_batch_output",
    _ac_get_terminator = "_ac_get_terminator",
    ac_in_buffer = "ac_in_buffer",
    ac_in_buffer_size = "ac_in_buffer_size",
    _ac_initiate_send = "_ac_initiate_send",
    ac_out_buffer_size = "ac_out_buffer_size",
    _ac_readable = "_ac_readable",
    _ac_writable = "_ac_writable",
    accept = "accept",
    accepting = "accepting",
    add_channel = "add_channel",
    addr = "addr",
    append = "append",
    appendleft = "appendleft",
    _asyncore_rs_change_log = "_asyncore_rs_change_log",
    _attach_traceback = "_attach_traceback",
    bind = "bind",
    builtins = "builtins",
    _changes = "_changes",
    clear = "clear",
    close = "close",
    co_filename = "co_filename",
    co_name = "co_name",
    collect_incoming_data = "collect_incoming_data",
    compact_traceback = "compact_traceback",
    connect_ex = "connect_ex",
    connected = "connected",
    connecting = "connecting",
    debug = "debug",
    del_channel = "del_channel",
    _disconnected = "_DISCONNECTED",
    dunder_dict = "__dict__",
    dunder_dictoffset = "__dictoffset__",
    // handler_calls.rs's cache key; the abi3 build calls through getattr.
    #[cfg(not(feature = "abi3"))]
    dunder_func = "__func__",
    dunder_module = "__module__",
    dunder_mro = "__mro__",
    dunder_qualname = "__qualname__",
    encoding = "encoding",
    endswith = "endswith",
    errno = "errno",
    errorcode = "errorcode",
    exc_info = "exc_info",
    _exception = "_exception",
    f_code = "f_code",
    family_and_type = "family_and_type",
    _fileno = "_fileno",
    fileno = "fileno",
    find = "find",
    found_terminator = "found_terminator",
    get = "get",
    get_terminator = "get_terminator",
    getpeername = "getpeername",
    getsockopt = "getsockopt",
    handle_accept = "handle_accept",
    handle_accepted = "handle_accepted",
    handle_close = "handle_close",
    handle_connect = "handle_connect",
    handle_connect_event = "handle_connect_event",
    handle_error = "handle_error",
    handle_expt = "handle_expt",
    handle_expt_event = "handle_expt_event",
    handle_read = "handle_read",
    handle_read_event = "handle_read_event",
    handle_write = "handle_write",
    handle_write_event = "handle_write_event",
    ignore_log_types = "ignore_log_types",
    incoming = "incoming",
    initiate_send = "initiate_send",
    items = "items",
    join = "join",
    listen = "listen",
    log_info = "log_info",
    _map = "_map",
    more = "more",
    name = "name",
    os = "os",
    out_buffer = "out_buffer",
    poll = "poll",
    poll2 = "poll2",
    print = "print",
    producer_fifo = "producer_fifo",
    read = "read",
    readable = "readable",
    readwrite = "readwrite",
    recv = "recv",
    _reraised_exceptions = "_reraised_exceptions",
    _rs_ac_in_buffer = "_rs_ac_in_buffer",
    _rs_out_buffer = "_rs_out_buffer",
    _rs_producer_fifo = "_rs_producer_fifo",
    select = "select",
    send = "send",
    set_socket = "set_socket",
    setblocking = "setblocking",
    setsockopt = "setsockopt",
    sleep = "sleep",
    so_error = "SO_ERROR",
    so_reuseaddr = "SO_REUSEADDR",
    socket = "socket",
    socket_map = "socket_map",
    socket_map_class = "SocketMap",
    sol_socket = "SOL_SOCKET",
    stderr = "stderr",
    strerror = "strerror",
    sys = "sys",
    tb_frame = "tb_frame",
    tb_lineno = "tb_lineno",
    tb_next = "tb_next",
    terminator = "terminator",
    time = "time",
    use_encoding = "use_encoding",
    values = "values",
    writable = "writable",
    write = "write",
    _ws_initiate_send = "_ws_initiate_send",
    _ws_writable = "_ws_writable",
}
