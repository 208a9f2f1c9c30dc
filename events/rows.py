"""Insert model rows in one plain INSERT, for the write paths every command takes.

bulk_create prepares each value through its field and, on PostgreSQL, sends the rows as
UNNEST arrays dumped element by element; on the append path that was a third of a
command's client CPU. A plain multi-row INSERT of the same values is a statement
PostgreSQL prepares once per connection and row count.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Field, Model


def insert(
    model: type[Model], fields: list[Field], rows: list[Model], *, on_conflict: str = "", returning: str = ""
) -> list[tuple]:
    """INSERT the rows' `fields` in one statement; return the `returning` columns of each row."""
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` goes through a thread-local proxy
    quote = db.ops.quote_name
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    sql = " ".join(
        [
            f"INSERT INTO {quote(model._meta.db_table)}",
            f"({', '.join(quote(field.column) for field in fields)})",
            f"VALUES {', '.join([one_row] * len(rows))}",
            on_conflict,
            f"RETURNING {returning}" if returning else "",
        ]
    )
    params = [field.get_db_prep_save(getattr(row, field.attname), db) for row in rows for field in fields]
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if returning else []
