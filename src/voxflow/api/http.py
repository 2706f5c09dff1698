"""The HTTP edge: one Starlette endpoint that authenticates, routes and renders.

Order of checks for every request: body size, authentication (401, always XML), the query
string, ``output``, ``v``, interface and method, verb, body. The event loop only reads the
request; checks, handler and rendering run in one worker thread. Nothing a client sends can
produce a traceback in a body.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, request_response
from starlette.types import Lifespan, Receive, Scope, Send

from voxflow import errors
from voxflow.api import routing, xmlcodec
from voxflow.api.routing import Request, Result
from voxflow.clock import Clock
from voxflow.domain.limits import Limits
from voxflow.errors import ApiError
from voxflow.services.accounts import Authenticator
from voxflow.store.db import Database

log = logging.getLogger("voxflow.api")

BODY_VERBS = frozenset({"POST", "PUT"})


class _TooLarge(Exception):
    pass


async def _read_body(request: HttpRequest) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > xmlcodec.MAX_BODY_BYTES:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > xmlcodec.MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


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
    """What the edge read from the connection, handed to the worker thread."""

    verb: str
    path: str
    query: dict[str, str]
    headers: Headers
    raw: bytes
    address: str | None


class ApiEndpoint:
    def __init__(self, db: Database, clock: Clock, limits: Limits | None = None) -> None:
        self.db = db
        self.clock = clock
        self.limits = limits or Limits()
        self.auth = Authenticator(db)

    async def handle(self, request: HttpRequest) -> Response:
        request_id = uuid.uuid4().hex[:16]
        try:
            raw = await _read_body(request)
        except _TooLarge:
            return _error_response(
                ApiError(errors.REQUEST_TOO_LARGE, status=413), "XML", request_id
            )
        incoming = Incoming(
            verb=request.method,
            path=str(request.path_params.get("interface") or request.scope["path"]),
            query=dict(request.query_params),
            headers=request.headers,
            raw=raw,
            address=request.client.host if request.client else None,
        )
        # Everything else runs in one worker thread: the event loop only moves bytes.
        return await run_in_threadpool(self.process, incoming, request_id)

    def process(self, incoming: Incoming, request_id: str) -> Response:
        output = "XML"
        try:
            account = self.auth.authenticate(
                incoming.headers.get("username", ""),
                incoming.headers.get("securekey", ""),
                incoming.address,
            )
            if account is None:
                raise ApiError(errors.UNAUTHORIZED, status=401)
            query = incoming.query
            if any("\x00" in k or "\x00" in v for k, v in query.items()):
                raise ApiError(errors.QUERY_STRING_INVALID)
            output = _output_of(query)
            _check_version(query)
            method = routing.resolve(incoming.path.strip("/"), query.get("method"))
            if incoming.verb != method.verb:
                raise ApiError(errors.verb_mismatch(method.verb, incoming.verb))
            body = xmlcodec.parse_request(incoming.raw) if method.verb in BODY_VERBS else None
            call = Request(
                account=account,
                query=query,
                body=body,
                headers=incoming.headers,
                raw_body=incoming.raw,
                db=self.db,
                clock=self.clock,
                output=output,
                limits=self.limits,
            )
            return _result_response(_run(method.handler, call), output, request_id)
        except ApiError as err:
            return _error_response(err, output if err.status != 401 else "XML", request_id)
        except Exception:
            log.exception("unhandled error request_id=%s path=%s", request_id, incoming.path)
            return _error_response(ApiError(errors.INTERNAL, status=500), output, request_id)


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
    gets the API's ``Request Method must be ...`` document, not a plain-text 405."""

    def __init__(self, endpoint: ApiEndpoint) -> None:
        self._app = request_response(endpoint.handle)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def build_app(
    db: Database,
    clock: Clock,
    lifespan: Lifespan[Starlette] | None = None,
    *,
    limits: Limits | None = None,
) -> Starlette:
    # Importing the interface modules registers their methods in the routing table.
    from voxflow.api import interfaces  # noqa: F401

    api = _AnyVerb(ApiEndpoint(db, clock, limits))
    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/{interface:path}", api),
        ],
    )
    # A path the route pattern cannot match (one with a newline in it) gets the API's answer
    # (401 or Interface Invalid) instead of a plain-text 404.
    app.router.default = api
    return app
