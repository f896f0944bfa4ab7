"""The statements of an append, run on the database driver's own cursor.

An append is the hot path of the audit store: every guarded request waits for its record's commit,
and on SQLite the commit runs in the gateway's process, on a thread that competes with the event
loop for the GIL. Through SQLAlchemy's ``Connection.execute`` each of an append's five statements
cost more CPU than the database spent running it (result set-up, parameter processing, events);
on the driver's cursor (``sqlite3`` or ``psycopg``) the same statements cost a fraction, and the
transaction around them stays SQLAlchemy's (``SqlAuditStore._write``). Values pass through each
column type's bind processor, so a row is stored exactly as SQLAlchemy would store it (SQLite
keeps times as text, and filters compare that text).

Driver errors surface as the driver's own exceptions; ``DriverErrors`` names them for the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Dialect, Table

from guard.audit import schema

Row = Mapping[str, Any]


@dataclass(frozen=True)
class DriverErrors:
    """The driver's exception classes: a refused row, and any database error."""

    integrity: type[BaseException]
    any: type[BaseException]


class AppendStatements:
    """SQL text of an append for one dialect, with the bind processors of its columns."""

    def __init__(self, dialect: Dialect) -> None:
        self._sqlite = dialect.name == "sqlite"
        dbapi = dialect.loaded_dbapi
        self.errors = DriverErrors(integrity=dbapi.IntegrityError, any=dbapi.Error)
        heads, records, categories = schema.heads.name, schema.records, schema.record_categories
        self._new_head = (
            f"INSERT INTO {heads} (tenant, seq, record_id, hash) VALUES ({self._p('tenant')}, 0, '', '') "
            "ON CONFLICT (tenant) DO NOTHING"
        )
        self._heads_select = f"SELECT tenant, seq, hash, record_id FROM {heads} WHERE tenant IN "
        self._heads_lock = "" if self._sqlite else " FOR UPDATE"
        self._set_head = (
            f"UPDATE {heads} SET seq = {self._p('s')}, hash = {self._p('h')}, record_id = {self._p('r')} "
            f"WHERE tenant = {self._p('t')}"
        )
        self._insert_records, self._record_binds = self._insert(records, dialect, skip=("pk",))
        self._insert_categories, self._category_binds = self._insert(categories, dialect)
        self._claim = (
            f"INSERT INTO {schema.reviews.name} (ref_id, record_id) "
            f"VALUES ({self._p('ref_id')}, {self._p('record_id')})"
        )

    def _p(self, name: str) -> str:
        """A named placeholder in the driver's style (sqlite3 ``:name``, psycopg ``%(name)s``)."""
        return f":{name}" if self._sqlite else f"%({name})s"

    def _insert(
        self, table: Table, dialect: Dialect, skip: Iterable[str] = ()
    ) -> tuple[str, dict[str, Callable[[Any], Any]]]:
        columns: list[Column] = [c for c in table.columns if c.name not in set(skip)]
        names = ", ".join(c.name for c in columns)
        values = ", ".join(self._p(c.name) for c in columns)
        binds = {}
        for column in columns:
            process = column.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds[column.name] = process
        return f"INSERT INTO {table.name} ({names}) VALUES ({values})", binds

    # ------------------------------------------------------------------ running them

    def ensure_heads(self, cursor: Any, tenants: Sequence[str]) -> None:
        """A head row (seq 0) for each tenant that has none yet."""
        cursor.executemany(self._new_head, [{"tenant": t} for t in tenants])

    def lock_heads(self, cursor: Any, tenants: Sequence[str]) -> list[tuple[str, int, str, str]]:
        """(tenant, seq, hash, record_id) of each tenant's head, locked until the transaction ends
        (PostgreSQL: ``FOR UPDATE``; SQLite: the transaction already holds the write lock)."""
        names = [f"t{i}" for i in range(len(tenants))]
        placeholders = ", ".join(self._p(n) for n in names)
        cursor.execute(f"{self._heads_select}({placeholders}){self._heads_lock}", dict(zip(names, tenants)))
        return [tuple(row) for row in cursor.fetchall()]

    def insert_records(self, cursor: Any, rows: Sequence[Row]) -> None:
        cursor.executemany(self._insert_records, [_bound(row, self._record_binds) for row in rows])

    def insert_categories(self, cursor: Any, rows: Sequence[Row]) -> None:
        if rows:
            cursor.executemany(self._insert_categories, [_bound(row, self._category_binds) for row in rows])

    def set_heads(self, cursor: Any, heads: Sequence[Row]) -> None:
        """``heads``: ``{"t": tenant, "s": seq, "h": hash, "r": record_id}`` each."""
        cursor.executemany(self._set_head, heads)

    def claim(self, cursor: Any, claims: Sequence[Row]) -> None:
        """Claim escalations for their reviews (``{"ref_id", "record_id"}`` each); a claimed one is
        refused with the driver's integrity error."""
        if claims:
            cursor.executemany(self._claim, claims)


def _bound(row: Row, binds: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    if not binds:
        return dict(row)
    return {name: (binds[name](value) if name in binds else value) for name, value in row.items()}


def driver_cursor(conn: Connection) -> Any:
    """A cursor of the driver connection under ``conn`` (inside the caller's transaction)."""
    return conn.connection.driver_connection.cursor()
