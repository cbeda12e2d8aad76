"""The C types and calls this package uses, built on `_ctypes`, the C half of the standard
library's ctypes, without importing its Python half.

Why not `import ctypes`: on a new backend's first call it costs 2-3 ms on Python 3.11 and
3.13 (ctypes/__init__.py, types, struct, ctypes._endian) and 6-8 ms on 3.14, whose ctypes
also imports sysconfig and threading: more than the whole rest of the extension's first
call. What the package needs of it is a few lines of ctypes/__init__.py, repeated here the
way that file writes them: a C type is a `_SimpleCData` subclass naming its type code, a
library is a dlopen() handle, a function is a `CFuncPtr` subclass instantiated with
(name, library), as `CDLL.__getitem__` does. `_ctypes` is private, but this is the
interface ctypes/__init__.py itself is written against, the same from Python 3.11 to 3.14;
the unit tests and every major's container tests call each binding.

Only what runs on 64-bit Linux, the one platform the images are built for: size_t is an
unsigned long and int64_t a long there.
"""

import _ctypes


def _c_type(name, code):
    """A C type as ctypes/__init__.py defines it: a _SimpleCData subclass with its code."""
    return type(name, (_ctypes._SimpleCData,), {"_type_": code})


c_void_p = _c_type("c_void_p", "P")
c_char_p = _c_type("c_char_p", "z")
c_char = _c_type("c_char", "c")
c_bool = _c_type("c_bool", "?")
c_int = _c_type("c_int", "i")
c_long = _c_type("c_long", "l")
c_ulong = _c_type("c_ulong", "L")
c_ulonglong = _c_type("c_ulonglong", "Q")
c_size_t, c_int64 = c_ulong, c_long
addressof = _ctypes.addressof


def buffer(size_or_data):
    """A zeroed C char array of `size` bytes, or a mutable C copy of the bytes `data`
    (ctypes.create_string_buffer without its trailing NUL)."""
    if isinstance(size_or_data, int):
        return (c_char * size_or_data)()
    array = (c_char * len(size_or_data))()
    array.raw = size_or_data
    return array


class _Function(_ctypes.CFuncPtr):
    _flags_ = _ctypes.FUNCFLAG_CDECL
    _restype_ = c_int


class Library:
    """A shared object opened as ctypes.CDLL(name) opens it: dlopen(name, RTLD_NOW |
    RTLD_LOCAL), OSError when it cannot be; None opens the running process (the server and
    every library already loaded into it)."""

    def __init__(self, name):
        self.name = name
        self._handle = _ctypes.dlopen(name, _ctypes.RTLD_LOCAL)

    def __repr__(self):
        return f"<Library {self.name!r}>"

    def function(self, name, restype, argtypes=()):
        """The C function `name` typed with its prototype, or None where the library has
        no such symbol."""
        try:
            function = _Function((name, self))
        except AttributeError:
            return None
        function.restype, function.argtypes = restype, argtypes
        return function

    def address(self, name):
        """The address of symbol `name` (an int), or None where the library has none."""
        try:
            return _ctypes.dlsym(self._handle, name)
        except OSError:
            return None
