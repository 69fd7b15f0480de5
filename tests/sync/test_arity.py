"""``arity``: how many positional arguments a listener or callback takes.

The blocking front asks it once per callback (every ``publish(..., callback)``), so plain
functions and methods are read off their code object; everything else goes through
``inspect.signature`` (``arity_by_signature``, the reference here). Both ways must give the
same answer for every kind of callable.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import pytest

from mqttkit.sync.events import arity, arity_by_signature


class _Callbacks:
    def method(self, err: Any, extra: int = 1, *, key: int = 0) -> None: ...

    def varargs(self, *args: Any) -> None: ...

    def nothing() -> None: ...  # type: ignore[misc]  # no self: a broken method

    @staticmethod
    def static(err: Any) -> None: ...

    @classmethod
    def klass(cls, err: Any, granted: Any) -> None: ...

    def __call__(self, err: Any) -> None: ...


def _none() -> None: ...


def _mixed(a: Any, /, b: Any, c: Any = 3, *, d: Any, **kw: Any) -> None: ...


def _wrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def _with_signature() -> Callable[..., Any]:
    def fn(*args: Any) -> None: ...

    fn.__signature__ = inspect.signature(_mixed)  # type: ignore[attr-defined]
    return fn


CALLABLES: list[tuple[str, Callable[..., Any]]] = [
    ("function, no arguments", _none),
    ("function, positional-only, defaults, keyword-only", _mixed),
    ("lambda", lambda err: None),
    ("lambda *args", lambda *args: None),
    ("bound method", _Callbacks().method),
    ("bound method *args", _Callbacks().varargs),
    ("bound method without self", _Callbacks().nothing),  # type: ignore[misc]
    ("staticmethod", _Callbacks.static),
    ("classmethod", _Callbacks.klass),
    ("instance with __call__", _Callbacks()),
    ("unbound function of a class", _Callbacks.method),
    ("builtin", print),
    ("builtin with a signature", len),
    ("functools.partial", functools.partial(_mixed, 1)),
    ("functools.wraps (follows __wrapped__)", _wrapped(_mixed)),
    ("__signature__ set", _with_signature()),
]


@pytest.mark.parametrize(("name", "fn"), CALLABLES, ids=[name for name, _ in CALLABLES])
def test_arity_agrees_with_inspect_signature(name: str, fn: Callable[..., Any]) -> None:
    assert arity(fn) == arity_by_signature(fn)


def test_arity_of_the_usual_callbacks() -> None:
    assert arity(lambda: None) == 0
    assert arity(lambda err: None) == 1
    assert arity(lambda err, granted: None) == 2
    assert arity(lambda *args: None) is None
