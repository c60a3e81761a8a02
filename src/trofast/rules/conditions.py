"""Conditions: typed clauses (field, operator, value) compiled once into plain functions.

No `eval`, no I/O: a clause reads one field of a read-only context and compares it with a
constant. Contexts are flat dicts keyed by the documented field names, built once per
activity (and once per basket line); see docs/program-file.md for the fields.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from trofast.rules.document import Clause, Op

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]

_COMPARE: dict[Op, Callable[[Any, Any], bool]] = {
    Op.gt: operator.gt,
    Op.gte: operator.ge,
    Op.lt: operator.lt,
    Op.lte: operator.le,
}


def compile_clause(clause: Clause) -> Predicate:
    """A function of a context that says whether the clause holds.

    Conditions run for every rule on every activity (millions in a replay), so each operator
    gets a function of its own, with nothing left to decide when it runs.
    """
    field, value, op = clause.field, clause.value, clause.op
    if op is Op.eq:
        return lambda ctx: ctx.get(field) == value
    if op is Op.ne:
        return lambda ctx: ctx.get(field) != value
    if op in (Op.in_, Op.not_in):
        return _is_in(field, value, wanted=op is Op.in_)
    if op in _COMPARE:
        compare = _COMPARE[op]
        return lambda ctx: _safe(compare, ctx.get(field), value)
    if op is Op.between:
        low, high = value

        def between(ctx: Context) -> bool:
            found = ctx.get(field)
            return _safe(operator.ge, found, low) and _safe(operator.le, found, high)

        return between
    if op is Op.contains:
        return lambda ctx: _contains(ctx.get(field), value)
    if op is Op.exists:
        present = True if value is None else bool(value)
        return lambda ctx: (ctx.get(field) is not None) is present
    raise ValueError(f"unknown operator {op}")


def compile_all(clauses: Sequence[Clause]) -> Predicate | None:
    """All clauses must hold; None when there are none (always true)."""
    predicates = tuple(compile_clause(c) for c in clauses)
    if not predicates:
        return None
    if len(predicates) == 1:
        return predicates[0]

    def every(ctx: Context) -> bool:
        # A loop, not all() over a generator: this runs per rule per activity, and the
        # generator costs more than the clauses.
        for predicate in predicates:  # noqa: SIM110
            if not predicate(ctx):
                return False
        return True

    return every


def _is_in(field: str, value: list[Any], *, wanted: bool) -> Predicate:
    """`in` (`wanted`) or `not_in`: whether the field's value equals one of `value`'s.

    A set look-up, since lists may hold hundreds of values. A field may hold what no set
    can: an attribute that is a JSON object, or a list holding one (lists compare as
    tuples). Those, and lists of values that hold them, are compared one by one, by
    equality: an object equals only an equal object, so for most lists it is simply not
    in them.
    """
    listed = tuple(_hashable(v) for v in value)
    try:
        members: frozenset[Any] | None = frozenset(listed)
    except TypeError:  # the list itself holds an object
        members = None

    def is_in(ctx: Context) -> bool:
        found = _hashable(ctx.get(field))
        if members is not None:
            try:
                return (found in members) is wanted
            except TypeError:
                pass
        return (found in listed) is wanted  # by equality: never hashes

    return is_in


def _safe(compare: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    if left is None:
        return False
    try:
        return bool(compare(left, right))
    except TypeError:
        return False


def _contains(container: Any, item: Any) -> bool:
    if container is None:
        return False
    try:
        return item in container
    except TypeError:
        return False


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
