"""Hot-path statements run on the driver's cursor, without SQLAlchemy's per-call machinery.

A Core statement costs 15-30 µs of Python per ``Connection.execute`` on top of what the
driver does (a few µs on SQLite); on initiateCall's path that was most of the request. A
:class:`RawStatement` compiles its statement once per dialect (and, for an insert, per set of
columns) with SQLAlchemy, keeps the SQL text and the type conversions SQLAlchemy would apply
(for instance SQLite's text form of a ``DateTime``), and then runs on the DBAPI cursor of the
caller's connection, inside the caller's transaction. The SQL is the one SQLAlchemy writes,
so it runs unchanged on SQLite and PostgreSQL.

``IN`` lists work as with SQLAlchemy: a list of constants (``status.in_([...])``) and an
expanding parameter (``bindparam("pks", expanding=True)``) given a list per execution. The
statement is compiled once per dialect, set of columns and length of each list given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.sqlite.base import DATETIME as SQLITE_DATETIME
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Insert, Select, Update
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any]

_SQLITE_DATETIME_FORMAT = SQLITE_DATETIME._storage_format


def _bind_processor(bind_type: Any, dialect: Dialect) -> Processor | None:
    """SQLAlchemy's conversion of a parameter, with a faster one for SQLite's ``DATETIME``.

    SQLite stores a ``DateTime`` as text, ``YYYY-MM-DD HH:MM:SS.ffffff``; SQLAlchemy formats it
    with ``%`` and a dict of seven fields. For a naive ``datetime`` (voxflow's times are naive
    UTC), ``isoformat(" ", "microseconds")`` writes the same text in a fraction of the time;
    anything else goes to SQLAlchemy's own processor.
    """
    impl = bind_type.dialect_impl(dialect)
    processor: Processor | None = impl.bind_processor(dialect)
    if (
        processor is None
        or not isinstance(impl, SQLITE_DATETIME)
        or impl._storage_format != _SQLITE_DATETIME_FORMAT
    ):
        return processor
    slow = processor

    def fast(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(" ", "microseconds")
        return slow(value)

    return fast


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positions: tuple[str, ...] | None  # parameter order for a positional paramstyle
    binds: tuple[tuple[str, Processor], ...]  # parameters whose values need converting
    results: tuple[Processor | None, ...]  # per column of a result row
    constants: tuple[tuple[str, Any], ...] = ()  # literals, and the items of constant IN lists
    expansions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # a list parameter's items


Lengths = tuple[tuple[str, int], ...]  # the length of each list parameter given


def _compile(
    stmt: ClauseElement, dialect: Dialect, keys: Sequence[str] | None, lengths: Lengths
) -> _Compiled:
    compiled = stmt.compile(dialect=dialect, column_keys=list(keys) if keys else None)
    assert isinstance(compiled, SQLCompiler)
    binds: list[tuple[str, Processor]] = []
    constants: list[tuple[str, Any]] = []  # literals of the statement (``case(..., 1)``)
    for name, bind in compiled.binds.items():
        if bind.expanding:
            continue
        processor = _bind_processor(bind.type, dialect)
        if processor is not None:
            binds.append((name, processor))
        if not bind.required and bind.callable is None and bind.value is not None:
            constants.append((name, bind.value))
    results: list[Processor | None] = []
    if isinstance(stmt, Select | Insert | Update):  # else the columns of its RETURNING
        for column in stmt.exported_columns:
            results.append(column.type.dialect_impl(dialect).result_processor(dialect, None))
    sql = str(compiled)
    order = compiled.positiontup if compiled.positional else None
    expansions: list[tuple[str, tuple[str, ...]]] = []
    if compiled.post_compile_params:
        # SQLAlchemy's own expansion of IN lists, done once for these lengths: it gives the
        # SQL with one placeholder per item, and the names and values of the items.
        given = dict(lengths)
        sample = compiled.construct_params(
            {name: [None] * n for name, n in given.items()}, _check=False
        )
        expanded = compiled._process_parameters_for_postcompile(sample)
        sql, order = expanded.statement, list(expanded.positiontup or []) or None
        for name, items in expanded.parameter_expansion.items():
            if name in given:
                expansions.append((name, tuple(items)))
            else:
                constants.extend((item, expanded.parameters[item]) for item in items)
        binds.extend(expanded.processors.items())
    positions = tuple(order) if order else None
    return _Compiled(
        sql, positions, tuple(binds), tuple(results), tuple(constants), tuple(expansions)
    )


class RawStatement:
    """A SELECT, INSERT or UPDATE (optionally ``RETURNING``) run straight on the driver.

    For an INSERT or UPDATE, the keys of the parameters that name columns are the columns set.
    """

    def __init__(self, stmt: Select[Any] | Insert | Update) -> None:
        self.stmt = stmt
        self._writes = isinstance(stmt, Insert | Update)
        self._cache: dict[tuple[str, tuple[str, ...] | None, Lengths], _Compiled] = {}
        self._returning_key: RawStatement | None = None  # for inserted_id off SQLite
        self._lists: frozenset[str] = frozenset(
            bind.key
            for bind in stmt._get_embedded_bindparams()
            if bind.expanding and bind.value is None and bind.callable is None
        )

    def _for(self, dialect: Dialect, keys: tuple[str, ...] | None, lengths: Lengths) -> _Compiled:
        found = self._cache.get((dialect.name, keys, lengths))
        if found is None:
            found = _compile(self.stmt, dialect, keys, lengths)
            self._cache[(dialect.name, keys, lengths)] = found
        return found

    def _run(self, conn: Connection, params: Mapping[str, Any], *, insert: bool) -> Any:
        lengths: Lengths = ()
        if self._lists:
            lengths = tuple((name, len(params[name])) for name in sorted(self._lists))
        compiled = self._for(conn.dialect, tuple(params) if insert else None, lengths)
        values = dict(compiled.constants)
        values.update(params)
        for name, items in compiled.expansions:
            values.update(zip(items, values.pop(name), strict=True))
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
        cursor, results = self._run(conn, params, insert=self._writes)
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

    def inserted_id(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """An INSERT of one row (built without ``RETURNING``): the row's integer primary key.

        On SQLite that key is the rowid, which the driver gives as ``lastrowid`` at no cost
        (``RETURNING`` made SQLite keep and hand back a result row: a third of the insert's
        time); elsewhere the insert runs with ``RETURNING`` the key.
        """
        if conn.dialect.name == "sqlite":
            cursor, _ = self._run(conn, params, insert=True)
            try:
                rowid: int = cursor.lastrowid
            finally:
                cursor.close()
            return rowid
        if self._returning_key is None:
            assert isinstance(self.stmt, Insert)
            (key,) = tuple(self.stmt.table.primary_key)
            self._returning_key = RawStatement(self.stmt.returning(key))
        (row,) = self._returning_key.rows(conn, params)
        return int(row[0])

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """An INSERT or UPDATE without ``RETURNING``: the number of rows it wrote."""
        cursor, _ = self._run(conn, params, insert=self._writes)
        try:
            count: int = cursor.rowcount
        finally:
            cursor.close()
        return count
