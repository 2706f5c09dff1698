"""The HTTP edge: one Starlette endpoint that authenticates, routes and renders.

Order of checks for every request: body size, authentication (401, always XML), the query
string, ``output``, ``v``, interface and method, verb, body. These run on the event loop: they
are CPU only, and a verified key is remembered (``Authenticator.remembered``); only a key not
seen in the last seconds is checked against the database, in a worker thread. A plain handler
then runs, with the body's parsing and the rendering, in one worker thread. A method
registered with ``route_async`` (initiateCall) runs on the loop and hands its database work to
the group-committing writer (``store.group_commit``; on a SQLite file the writer process of
``store.writer_process``). Nothing a client sends can produce a
traceback in a body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

from lxml import etree
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Lifespan, Receive, Scope, Send

from voxflow import errors, ids
from voxflow.api import routing, xmlcodec
from voxflow.api.routing import Request, Result
from voxflow.clock import Clock
from voxflow.digits import ascii_digits
from voxflow.domain.limits import Limits
from voxflow.errors import ApiError
from voxflow.services.accounts import Account, Authenticator
from voxflow.store.db import Database
from voxflow.store.group_commit import writer_for

log = logging.getLogger("voxflow.api")

BODY_VERBS = frozenset({"POST", "PUT"})
# A body up to this size is parsed on the event loop for a method that runs there (a few
# hundred microseconds at most); a larger one is parsed in a worker thread.
LOOP_PARSE_MAX_BYTES = 64 * 1024


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(headers: Headers, receive: Receive) -> bytes:
    declared = headers.get("content-length", "")
    if ascii_digits(declared) and int(declared) > xmlcodec.MAX_BODY_BYTES:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        if message["type"] != "http.request":
            continue
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > xmlcodec.MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _query(scope: Scope) -> dict[str, str]:
    """The query string as Starlette's ``dict(request.query_params)`` reads it (the last of a
    repeated name wins)."""
    raw: bytes = scope["query_string"]
    if len(raw) > _CACHED_QUERY_BYTES:
        return dict(_parse_query(raw))
    return dict(_parsed_query(raw))


def _parse_query(raw: bytes) -> tuple[tuple[str, str], ...]:
    return tuple(parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


# A client sends the same few query strings again and again (v=3&method=initiateCall): the
# short ones are parsed once (at most 1,024 of them kept, so at most 256 KiB).
_CACHED_QUERY_BYTES = 256
_parsed_query = lru_cache(maxsize=1024)(_parse_query)


def _error_response(err: ApiError, output: str, request_id: str) -> Response:
    body, content_type = xmlcodec.error_document(err, output)
    return Response(
        body, status_code=err.status, media_type=content_type, headers={"x-request-id": request_id}
    )


def _result_response(result: Result, output: str, request_id: str) -> Response:
    headers = {"x-request-id": request_id}
    if result.empty:
        return Response(status_code=result.status, headers=headers)
    body, content_type = xmlcodec.render(result.root, result.tree, output)
    return Response(body, status_code=result.status, media_type=content_type, headers=headers)


def _output_of(query: dict[str, str]) -> str:
    output = query.get("output")
    if output is None:
        return "XML"
    if output.upper() in ("XML", "JSON"):
        return output.upper()
    raise ApiError(errors.OUTPUT_TYPE_INVALID)


def _check_version(query: dict[str, str]) -> None:
    version = query.get("v", "").strip()
    if not version:
        raise ApiError(errors.API_VERSION_EMPTY)
    if version != "3":
        raise ApiError(errors.API_VERSION_INVALID)


@dataclass(frozen=True)
class Incoming:
    """What the edge read from the connection."""

    verb: str
    path: str
    query: dict[str, str]
    headers: Headers
    raw: bytes
    address: str | None


class _Output:
    """The ``output`` asked for, once it is known (errors before that are XML)."""

    value = "XML"


def _method_of(incoming: Incoming, output: _Output) -> routing.Method:
    query = incoming.query
    if any("\x00" in k or "\x00" in v for k, v in query.items()):
        raise ApiError(errors.QUERY_STRING_INVALID)
    output.value = _output_of(query)
    _check_version(query)
    method = routing.resolve(incoming.path.strip("/"), query.get("method"))
    if incoming.verb != method.verb:
        raise ApiError(errors.verb_mismatch(method.verb, incoming.verb))
    return method


class ApiEndpoint:
    def __init__(self, db: Database, clock: Clock, limits: Limits | None = None) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits or Limits()
        self.auth = Authenticator(db)
        self.writer = writer_for(db, refusals=(ApiError,))

    async def handle(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to one request (None: the client went away before it was read)."""
        request_id = ids.request_id()
        headers = Headers(scope=scope)
        try:
            raw = await _read_body(headers, receive)
        except _TooLarge:
            return _error_response(
                ApiError(errors.REQUEST_TOO_LARGE, status=413), "XML", request_id
            )
        except _Disconnected:
            return None
        client = scope.get("client")
        interface = scope.get("path_params", {}).get("interface")
        incoming = Incoming(
            verb=scope["method"],
            path=str(interface or scope["path"]),
            query=_query(scope),
            headers=headers,
            raw=raw,
            address=client[0] if client else None,
        )
        output = _Output()
        try:
            return await self._respond(incoming, output, request_id)
        except ApiError as err:
            return _error_response(err, output.value if err.status != 401 else "XML", request_id)
        except Exception:
            log.exception("unhandled error request_id=%s path=%s", request_id, incoming.path)
            return _error_response(ApiError(errors.INTERNAL, status=500), output.value, request_id)

    async def _respond(self, incoming: Incoming, output: _Output, request_id: str) -> Response:
        username = incoming.headers.get("username", "")
        key = incoming.headers.get("securekey", "")
        account = self.auth.remembered(username, key, incoming.address)
        if account is None:
            account = await run_in_threadpool(
                self.auth.authenticate, username, key, incoming.address
            )
        if account is None:
            raise ApiError(errors.UNAUTHORIZED, status=401)
        method = _method_of(incoming, output)
        if method.on_loop is None:
            # One worker thread parses the body, runs the handler and renders the answer.
            return await run_in_threadpool(
                self._in_thread, method, incoming, account, output.value, request_id
            )
        body = None
        if method.verb in BODY_VERBS:
            if len(incoming.raw) <= LOOP_PARSE_MAX_BYTES:
                body = xmlcodec.parse_request(incoming.raw)
            else:
                body = await run_in_threadpool(xmlcodec.parse_request, incoming.raw)
        result = await method.on_loop(self._request(incoming, account, body, output.value))
        return _result_response(result, output.value, request_id)

    def _in_thread(
        self,
        method: routing.Method,
        incoming: Incoming,
        account: Account,
        output: str,
        request_id: str,
    ) -> Response:
        assert method.handler is not None
        body = xmlcodec.parse_request(incoming.raw) if method.verb in BODY_VERBS else None
        result = _run(method.handler, self._request(incoming, account, body, output))
        return _result_response(result, output, request_id)

    def _request(
        self, incoming: Incoming, account: Account, body: etree._Element | None, output: str
    ) -> Request:
        return Request(
            account=account,
            query=incoming.query,
            body=body,
            headers=incoming.headers,
            raw_body=incoming.raw,
            db=self.db,
            clock=self.clock,
            output=output,
            limits=self.limits,
            writer=self.writer,
        )


def _run(handler: routing.Handler, call: Request) -> Result:
    """Run a handler; once more if a concurrent request broke a unique constraint first.

    Every handler checks, then writes, in one transaction. On PostgreSQL (READ COMMITTED) another
    request can commit a clashing row between the checks and the insert; the transaction then
    rolls back whole, and the second run's checks see that row and answer with the iovox error.
    """
    try:
        return handler(call)
    except IntegrityError:
        return handler(call)


async def health(_request: HttpRequest) -> Response:
    """A bare endpoint: load balancers probe it, and the API benchmark measures against it."""
    return PlainTextResponse("ok")


class _AnyVerb:
    """The endpoint as an ASGI app, which Starlette routes for every verb: an unexpected verb
    gets the API's ``Request Method must be ...`` document, not a plain-text 405. It reads the
    scope itself rather than through Starlette's Request: a few objects fewer per request on
    the API's hottest path."""

    def __init__(self, endpoint: ApiEndpoint) -> None:
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._endpoint.handle(scope, receive)
        if response is not None:
            await response(scope, receive, send)


def build_app(
    db: Database,
    clock: Clock,
    lifespan: Lifespan[Starlette] | None = None,
    *,
    limits: Limits | None = None,
    start_writer: bool = False,
) -> Starlette:
    # Importing the interface modules registers their methods in the routing table.
    from voxflow.api import interfaces  # noqa: F401

    endpoint = ApiEndpoint(db, clock, limits)
    api = _AnyVerb(endpoint)

    @contextlib.asynccontextmanager
    async def serving(app: Starlette) -> AsyncIterator[None]:
        if start_writer:  # the writer process starts with the server, not with the first call
            endpoint.writer.start()
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield
        finally:
            # Requests are done by now: the writer commits what it holds, then stops (a
            # process of its own ends here rather than when this process dies).
            await asyncio.to_thread(endpoint.writer.close)

    app = Starlette(
        lifespan=serving,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{interface:path}", api),
        ],
    )
    # A path the route pattern cannot match (one with a newline in it) gets the API's answer
    # (401 or Interface Invalid) instead of a plain-text 404.
    app.router.default = api
    return app
