"""The method table: ``(Interface, method)`` → verb and handler.

Interface modules register their handlers with :func:`route`; the HTTP edge looks them up
with :func:`resolve`. A handler is a plain function of a :class:`Request` that returns a
:class:`Result` and raises :class:`~voxflow.errors.ApiError` for anything the client got wrong;
the edge runs it in a worker thread. A method registered with :func:`route_async` is a
coroutine run on the event loop: it must not block, and hands its database work to
``Request.writer`` (initiateCall, whose writes are group-committed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voxflow import errors
from voxflow.domain.limits import Limits
from voxflow.errors import ApiError

if TYPE_CHECKING:
    from lxml import etree

    from voxflow.api.xmlcodec import Tree
    from voxflow.clock import Clock
    from voxflow.services.accounts import Account
    from voxflow.store.db import Database
    from voxflow.store.group_commit import Writer


@dataclass(frozen=True)
class Request:
    account: Account
    query: Mapping[str, str]
    body: etree._Element | None
    headers: Mapping[str, str]
    raw_body: bytes
    db: Database
    clock: Clock
    output: str = "XML"
    limits: Limits = field(default_factory=Limits)  # the configured defaults ([limits])
    writer: Writer | None = None


@dataclass(frozen=True)
class Result:
    status: int
    tree: Tree = None
    root: str = "response"
    empty: bool = field(default=False)

    @classmethod
    def no_content(cls) -> Result:
        return cls(204, empty=True)


Handler = Callable[[Request], Result]
AsyncHandler = Callable[[Request], Awaitable[Result]]


@dataclass(frozen=True)
class Method:
    interface: str
    name: str
    verb: str
    handler: Handler | None
    on_loop: AsyncHandler | None = None


_TABLE: dict[tuple[str, str], Method] = {}
_INTERFACES: dict[str, str] = {}


def route(interface: str, name: str, verb: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as ``interface::name``; registering a pair twice is a bug."""

    def register(handler: Handler) -> Handler:
        _register(Method(interface, name, verb, handler))
        return handler

    return register


def route_async(interface: str, name: str, verb: str) -> Callable[[AsyncHandler], AsyncHandler]:
    """Register a coroutine that runs on the event loop (it must never block)."""

    def register(handler: AsyncHandler) -> AsyncHandler:
        _register(Method(interface, name, verb, None, handler))
        return handler

    return register


def _register(method: Method) -> None:
    key = (method.interface.lower(), method.name.lower())
    if key in _TABLE:
        raise RuntimeError(f"{method.interface}::{method.name} is registered twice")
    _TABLE[key] = method
    _INTERFACES[method.interface.lower()] = method.interface


def resolve(interface: str, method: str | None) -> Method:
    """The method for a path segment and ``method`` parameter, or the iovox-style error."""
    if interface.lower() not in _INTERFACES:
        raise ApiError(errors.INTERFACE_INVALID)
    if not method:
        raise ApiError(errors.METHOD_EMPTY)
    found = _TABLE.get((interface.lower(), method.lower()))
    if found is None:
        raise ApiError(errors.METHOD_INVALID)
    return found


def methods() -> list[Method]:
    return sorted(_TABLE.values(), key=lambda m: (m.interface, m.name))
