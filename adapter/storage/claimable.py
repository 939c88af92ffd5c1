"""Claim queries that read a partial index of the claimable rows, in order, whatever the history.

A work table (inbox, outbox) keeps its finished rows for reports and retention; a claim must touch
only the rows it could take. Each such table declares a partial index on its claimable states,
ordered the way its claim reads (:func:`claimable_index`), and the claim names those states with
:func:`in_states`, so both databases can prove the index covers the query:

- PostgreSQL proves an index predicate only from constants: the states are rendered inline, never as
  parameters (a prepared statement's generic plan could not use the index).
- SQLite's planner has no statistics unless ``ANALYZE`` ran, and without them it prefers a full
  index on ``state`` plus a sort. :func:`indexed_by` names the index (``INDEXED BY``), which SQLite
  documents for exactly this: a query whose plan must not change; if the index cannot serve the
  query, SQLite fails the statement instead of silently scanning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Index, TextClause, literal, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import Alias
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import SQLModel

from adapter.storage.db import table_of


def states_predicate(states: Sequence[str]) -> TextClause:
    """The partial index predicate: ``state IN ('a', 'b')`` (constants, as both planners need)."""
    if not all(state.isidentifier() for state in states):
        raise ValueError("states are plain words")  # inlined into DDL: no quoting games
    return text(f"state IN ({', '.join(repr(state) for state in states)})")


def claimable_index(name: str, *columns: str, states: Sequence[str]) -> Index:
    """A partial index over the rows in ``states`` only, on both databases."""
    where = states_predicate(states)
    return Index(name, *columns, postgresql_where=where, sqlite_where=where)


def in_states(column: Any, states: Sequence[str]) -> ColumnElement[bool]:
    """``column IN (...)`` with the states inlined, matching :func:`states_predicate`."""
    return column.in_([literal(state, literal_execute=True) for state in states])


class _IndexedBy(Alias):
    """The table under its own name; on SQLite followed by ``INDEXED BY <index>``."""

    inherit_cache = True
    _traverse_internals = [*Alias._traverse_internals, ("index_name", InternalTraversal.dp_string)]
    index_name: str = ""


@compiles(_IndexedBy, "sqlite")
def _sqlite_indexed_by(element: _IndexedBy, compiler: Any, **kw: Any) -> str:
    rendered: str = compiler.visit_alias(element, **kw)
    if kw.get("asfrom"):  # only where the table is a FROM item, not where a column names it
        rendered += f" INDEXED BY {element.index_name}"
    return rendered


def indexed_by(model: type[SQLModel], index_name: str) -> Any:
    """``model``'s table read through ``index_name`` on SQLite (PostgreSQL plans by itself, from its
    statistics). The aliased entity loads ordinary ``model`` instances, under the table's own name."""
    table = table_of(model)
    alias = _IndexedBy._construct(table, name=table.name)
    alias.index_name = index_name
    return aliased(model, alias)
