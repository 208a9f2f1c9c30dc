"""Plain SQL for statements every command, handler task or relay batch runs, converted as the ORM does.

bulk_create prepares each value through its field and, on PostgreSQL, sends the rows as
UNNEST arrays dumped element by element; on the append path that was a third of a
command's client CPU. A plain multi-row INSERT of the same values is a statement
PostgreSQL prepares once per connection and row count. Likewise compiling the ORM's
query that loads a pet's stream cost ten times running it. Values still go through the
model fields (get_db_prep_*, from_db_value and the backend's converters), so what comes
back is what a QuerySet would give, on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple, TypeVar

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model
from django.db.models.expressions import Col

M = TypeVar("M", bound=Model)


class Statement(NamedTuple):
    """SQL with its positional parameters: run alone (`run`), or inside a larger statement."""

    sql: str
    params: list | dict  # positional (%s) or named (%(name)s) placeholders


def insert_statement(
    model: type[Model],
    fields: list[Field],
    rows: list[Model] | list[dict],
    *,
    on_conflict: str = "",
    returning: str = "",
    placeholders: dict[str, str] | None = None,
) -> Statement:
    """The INSERT of the rows' `fields` in one statement. A row is an instance or a dict of
    every field's attname. `placeholders` may replace a field's plain %s with an expression
    around its one parameter."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` goes through a thread-local proxy
    names = tuple(field.attname for field in fields)  # the cache's key: a Field hashes slowly
    shape = tuple(sorted((placeholders or {}).items()))
    sql = _insert_sql(db.vendor, model, names, len(rows), on_conflict, returning, shape)
    params = [
        field.get_db_prep_save(values[field.attname], db)
        for values in (row if isinstance(row, dict) else vars(row) for row in rows)
        for field in fields
    ]
    return Statement(sql, params)


@lru_cache(maxsize=128)
def _insert_sql(
    vendor: str,
    model: type[Model],
    names: tuple[str, ...],
    row_count: int,
    on_conflict: str,
    returning: str,
    placeholders: tuple[tuple[str, str], ...],
) -> str:
    """insert_statement's SQL, built once per shape: the hot paths insert the same shapes."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name  # the same for every connection of a vendor
    expressions = dict(placeholders)
    fields = [model._meta.get_field(name) for name in names]  # attnames are found too
    one_row = "(" + ", ".join(expressions.get(field.attname, "%s") for field in fields) + ")"
    return " ".join(
        [
            f"INSERT INTO {quote(model._meta.db_table)}",
            f"({', '.join(quote(field.column) for field in fields)})",
            f"VALUES {', '.join([one_row] * row_count)}",
            on_conflict,
            f"RETURNING {returning}" if returning else "",
        ]
    )


def insert(
    model: type[Model],
    fields: list[Field],
    rows: list[Model] | list[dict],
    *,
    on_conflict: str = "",
    returning: str = "",
) -> list[tuple]:
    """INSERT the rows' `fields` in one statement; return the `returning` columns of each row."""
    statement = insert_statement(model, fields, rows, on_conflict=on_conflict, returning=returning)
    if not returning:
        run(statement)
        return []
    return fetch(statement)


def run(statement: Statement) -> None:
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(*statement)


def fetch(statement: Statement) -> list[tuple]:
    """Run a statement that returns rows; return them as the database sent them (unconverted)."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(*statement)
        return cursor.fetchall()


def saved(instance: M) -> M:
    """Mark an instance that `insert` wrote as saved, as Model.save leaves it."""
    instance._state.adding, instance._state.db = False, DEFAULT_DB_ALIAS
    return instance


def create(instance: M, *, on_conflict: str = "") -> M | None:
    """INSERT one instance as Model.objects.create does (each field's pre_save: auto_now and
    auto_now_add set; the primary key filled in; the instance marked saved), without
    compiling a query. With `on_conflict` … DO NOTHING: None when no row went in."""
    model = type(instance)
    fields = [f for f in model._meta.concrete_fields if f is not model._meta.auto_field]
    for field in fields:
        setattr(instance, field.attname, field.pre_save(instance, add=True))
    pk_column = connections[DEFAULT_DB_ALIAS].ops.quote_name(model._meta.pk.column)
    returned = insert(model, fields, [instance], on_conflict=on_conflict, returning=pk_column)
    if not returned:
        return None
    [(instance.pk,)] = returned
    return saved(instance)


@lru_cache(maxsize=64)
def attnames(model: type[Model]) -> tuple[str, ...]:
    """Every concrete field's attname, in field order: what a whole row holds."""
    return tuple(f.attname for f in model._meta.concrete_fields)


def find(model: type[M], **equal) -> M | None:
    """The row whose fields equal `equal` (a unique key) as an instance, or None: what
    Model.objects.filter(**equal).first() gives, without compiling a query."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    where = " AND ".join(f"{quote(model._meta.get_field(name).column)} = %({name})s" for name in equal)
    rows = select(model, list(attnames(model)), where=where, params=prepared(model, **equal), limit=1)
    return instances(model, rows)[0] if rows else None


def instances(model: type[M], rows: list[list]) -> list[M]:
    """Instances from rows of all the model's fields, in field order, converted already."""
    names = attnames(model)
    return [model.from_db(DEFAULT_DB_ALIAS, names, row) for row in rows]


def select(
    model: type[Model],
    names: list[str],
    *,
    where: str,
    params: dict,
    order_by: str = "",
    limit: int | None = None,
    for_update: bool = False,
) -> list[list]:
    """SELECT the model's fields `names` from its table; convert each value as a QuerySet would.

    `where` and `params` use the model's column names and %(name)s placeholders; prepare the
    params with `prepared`. `for_update` locks the rows where the database can (SQLite
    ignores it, as it ignores select_for_update).
    """
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    columns = ", ".join(quote(model._meta.get_field(name).column) for name in names)
    sql = f"SELECT {columns} FROM {quote(model._meta.db_table)} WHERE {where}"
    sql += f" ORDER BY {order_by}" if order_by else ""
    sql += f" LIMIT {int(limit)}" if limit is not None else ""
    sql += " FOR UPDATE" if for_update and db.features.has_select_for_update else ""
    return _fetched(db, sql, params, model, names)


def get_with_related(model: type[M], pk, related: list[str]) -> M:
    """Load one row by primary key with the rows its relations `related` point to.

    What select_related(*related).get(pk=pk) returns (model.DoesNotExist if there is no such
    row). A path such as "user__customer" follows one relation after another. Each hop is a
    non-null foreign key (an inner join) or a reverse one-to-one (a left join: the relation
    is cached as None when there is no such row, so reading it raises DoesNotExist).
    """
    db = connections[DEFAULT_DB_ALIAS]
    sql, hops = _joined_select(db.vendor, model, tuple(related))
    with db.cursor() as cursor:
        cursor.execute(sql, [model._meta.pk.get_db_prep_value(pk, db)])
        row = cursor.fetchone()
    if row is None:
        raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
    instances, start = [], 0
    for hop in hops:
        fields = hop.model._meta.concrete_fields
        values = list(row[start : start + len(fields)])
        start += len(fields)
        if hop.outer and values[hop.model._meta.concrete_fields.index(hop.model._meta.pk)] is None:
            instances.append(None)  # the left join found no row
        else:
            conversions = _conversions(db, hop.model, tuple(field.name for field in fields))
            converted = _converted(values, conversions, db)
            instances.append(hop.model.from_db(db.alias, [field.attname for field in fields], converted))
        if hop.parent is not None and instances[hop.parent] is not None:
            hop.link.set_cached_value(instances[hop.parent], instances[-1])  # as select_related does
            if instances[-1] is not None and hop.outer:
                hop.link.remote_field.set_cached_value(instances[-1], instances[hop.parent])
    return instances[0]


class _Hop(NamedTuple):
    model: type[Model]
    parent: int | None  # index of the hop this one is reached from
    link: Field | None  # the relation followed from the parent (a field, or a reverse relation)
    outer: bool  # a reverse one-to-one: a left join


@lru_cache(maxsize=64)
def _joined_select(vendor: str, model: type[Model], related: tuple[str, ...]) -> tuple[str, tuple[_Hop, ...]]:
    """The SELECT of get_with_related and its hops, built once per database vendor and paths."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name  # the same for every connection of a vendor
    hops, by_path, joins = [_Hop(model, None, None, False)], {"": 0}, []
    for path in related:
        parts = path.split("__")
        for depth in range(1, len(parts) + 1):
            prefix = "__".join(parts[:depth])
            if prefix in by_path:
                continue
            parent = by_path["__".join(parts[: depth - 1])]
            link = hops[parent].model._meta.get_field(parts[depth - 1])
            forward = link.concrete and (link.many_to_one or link.one_to_one) and not link.null
            outer = link.one_to_one and not link.concrete  # a reverse one-to-one
            if not (forward or outer):
                raise ValueError(f"{path}: only non-null foreign keys and reverse one-to-ones")
            if hops[parent].outer:  # an inner join below a left join would drop the whole row
                raise ValueError(f"{path}: nothing can follow a reverse one-to-one")
            target = link.related_model
            alias, parent_alias = f"r{len(hops)}", f"r{parent}"
            if outer:  # the target's one-to-one field points back at the parent
                remote = link.remote_field
                on = f"{alias}.{quote(remote.column)} = {parent_alias}.{quote(remote.target_field.column)}"
            else:
                on = f"{alias}.{quote(link.target_field.column)} = {parent_alias}.{quote(link.column)}"
            kind = "LEFT JOIN" if outer else "JOIN"
            joins.append(f"{kind} {quote(target._meta.db_table)} {alias} ON {on}")
            by_path[prefix] = len(hops)
            hops.append(_Hop(target, parent, link, outer))
    columns = ", ".join(
        f"r{index}.{quote(field.column)}"
        for index, hop in enumerate(hops)
        for field in hop.model._meta.concrete_fields
    )
    sql = (
        f"SELECT {columns} FROM {quote(model._meta.db_table)} r0 {' '.join(joins)}"
        f" WHERE r0.{quote(model._meta.pk.column)} = %s"
    )
    return sql, tuple(hops)


def update_statement(model: type[Model], pk, **values) -> Statement:
    """The UPDATE of one row's fields, as Model.save(update_fields=…) would, without compiling a query."""
    db = connections[DEFAULT_DB_ALIAS]
    sql, fields = _update_sql(db.vendor, model, tuple(values))
    params = [field.get_db_prep_save(values[field.name], db) for field in fields]
    params.append(model._meta.pk.get_db_prep_value(pk, db))
    return Statement(sql, params)


@lru_cache(maxsize=64)
def _update_sql(vendor: str, model: type[Model], names: tuple[str, ...]) -> tuple[str, list[Field]]:
    """update_statement's SQL and fields, built once per model and set of fields."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name  # the same for every connection of a vendor
    fields = [model._meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    where = f"{quote(model._meta.pk.column)} = %s"
    return f"UPDATE {quote(model._meta.db_table)} SET {assignments} WHERE {where}", fields


def update(model: type[Model], pk, **values) -> None:
    """UPDATE one row's fields (update_statement, run)."""
    run(update_statement(model, pk, **values))


def increment(
    model: type[Model], counter: str, *, where: str, params: dict, returning: list[str]
) -> list[list]:
    """Add one to the field `counter` of the rows matching `where` (as in `select`); return the
    fields `returning` of each, converted as `select` converts them.

    One statement counts and locks the row. Under READ COMMITTED an UPDATE that waited for
    the lock adds to what its previous holder committed, so no count is lost.
    """
    db = connections[DEFAULT_DB_ALIAS]
    quote = db.ops.quote_name
    column = quote(model._meta.get_field(counter).column)
    returned = ", ".join(quote(model._meta.get_field(name).column) for name in returning)
    sql = (
        f"UPDATE {quote(model._meta.db_table)} SET {column} = {column} + 1 WHERE {where} RETURNING {returned}"
    )
    return _fetched(db, sql, params, model, returning)


def advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit number) for a name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def lock_until_transaction_ends(name: str) -> None:
    """Wait for PostgreSQL's advisory lock on `name`, held until the transaction ends.

    Unlike claiming a row, taking it gives the transaction no id yet (see events/store.py on
    why the first write of a command must be its event). Elsewhere nothing: SQLite has one
    writer at a time.
    """
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(name)])


def prepared(model: type[Model], **values) -> dict:
    """Return the values as query parameters for the model's fields of the same names."""
    db = connections[DEFAULT_DB_ALIAS]
    return {name: model._meta.get_field(name).get_db_prep_value(value, db) for name, value in values.items()}


def converted(model: type[Model], names: list[str], rows: list) -> list[list]:
    """Convert rows of the model's fields `names` read by a statement of one's own, as `select` does."""
    db = connections[DEFAULT_DB_ALIAS]
    conversions = _conversions(db, model, tuple(names))
    return [_converted(list(row), conversions, db) for row in rows]


def _fetched(db, sql: str, params: dict, model: type[Model], names: list[str]) -> list[list]:
    """Run `sql`; return its rows, each value (the model's fields `names`) converted as a
    QuerySet converts it."""
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    conversions = _conversions(db, model, tuple(names))
    return [_converted(list(row), conversions, db) for row in rows]


@lru_cache(maxsize=256)
def _conversions(db, model: type[Model], names: tuple[str, ...]) -> tuple[tuple[int, Col, tuple], ...]:
    """(index, column, converters) of the named fields that have converters, as a QuerySet
    finds them (the backend's, then the field's). Cached per connection: the hot paths select
    the same fields every time, and asking the backend and each field again was 5 % of a
    handler task's CPU."""
    found = []
    for index, name in enumerate(names):
        field = model._meta.get_field(name)
        col = field.get_col(field.model._meta.db_table)  # a foreign key's column has its target's type
        functions = tuple(db.ops.get_db_converters(col) + col.get_db_converters(db))
        if functions:
            found.append((index, col, functions))
    return tuple(found)


def _converted(values: list, conversions: tuple[tuple[int, Col, tuple], ...], db) -> list:
    for index, col, functions in conversions:
        for function in functions:
            values[index] = function(values[index], col, db)
    return values
