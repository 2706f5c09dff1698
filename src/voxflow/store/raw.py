"""Hot-path statements run on the driver's cursor, without SQLAlchemy's per-call machinery.

A Core statement costs 15-30 µs of Python per ``Connection.execute`` on top of what the
driver does (a few µs on SQLite); on initiateCall's path that was most of the request. A
:class:`RawStatement` compiles its statement once per dialect (and, for an insert, per set of
columns) with SQLAlchemy, keeps the SQL text and the type conversions SQLAlchemy would apply
(for instance SQLite's text form of a ``DateTime``), and then runs on the DBAPI cursor of the
caller's connection, inside the caller's transaction. The SQL is the one SQLAlchemy writes,
so it runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Insert, Select
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # parameter order for a positional paramstyle
    binds: tuple[tuple[str, Processor], ...]  # parameters whose values need converting
    results: tuple[Processor | None, ...]  # per column of a result row


def _compile(stmt: ClauseElement, dialect: Dialect, keys: Sequence[str] | None) -> _Compiled:
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    assert isinstance(compiled, SQLCompiler)
    binds: list[tuple[str, Processor]] = []
    for name, bind in compiled.binds.items():
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            binds.append((name, processor))
    results: list[Processor | None] = []
    if isinstance(stmt, Select | Insert):  # an INSERT's columns are those of its RETURNING
        for column in stmt.exported_columns:
            results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
    order = compiled.positiontup if compiled.positional else None
    positions = tuple(order) if order else None
    return _Compiled(str(compiled), positions, tuple(binds), tuple(results))


class RawStatement:
    """A SELECT or INSERT (optionally ``RETURNING``) run straight on the driver."""

    def __init__(self, stmt: Select[Any] | Insert) -> None:
        self.stmt = stmt
        self._cache: dict[tuple[str, tuple[str, ...] | None], _Compiled] = {}

    def _for(self, dialect: Dialect, keys: tuple[str, ...] | None) -> _Compiled:
        found = self._cache.get((dialect.name, keys))
        if found is None:
            found = _compile(self.stmt, dialect, keys)
            self._cache[(dialect.name, keys)] = found
        return found

    def _run(self, conn: Connection, params: Mapping[str, Any], *, insert: bool) -> Any:
        compiled = self._for(conn.dialect, tuple(params) if insert else None)
        values = dict(params)
        for name, processor in compiled.binds:
            if name in values:
                values[name] = processor(values[name])
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        args: Any = values
        if compiled.positions is not None:
            args = [values[name] for name in compiled.positions]
        dbapi_error = conn.dialect.loaded_dbapi.Error
        try:
            cursor.execute(compiled.sql, args)
        except dbapi_error as exc:
            cursor.close()
            # The exception SQLAlchemy would raise (IntegrityError for a broken unique key...),
            # so that callers handle both paths alike.
            raise DBAPIError.instance(compiled.sql, args, exc, dbapi_error) from exc
        return cursor, compiled.results

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Every row of a SELECT (or of an INSERT's ``RETURNING``), converted."""
        cursor, results = self._run(conn, params, insert=isinstance(self.stmt, Insert))
        try:
            fetched = cursor.fetchall()
        finally:
            cursor.close()
        if not any(results):
            return [tuple(row) for row in fetched]
        return [
            tuple(v if p is None or v is None else p(v) for p, v in zip(results, row, strict=True))
            for row in fetched
        ]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        found = self.rows(conn, params)
        return found[0] if found else None

    def insert(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """An INSERT of the given columns, without ``RETURNING``."""
        cursor, _ = self._run(conn, params, insert=True)
        cursor.close()
