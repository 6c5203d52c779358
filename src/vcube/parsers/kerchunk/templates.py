"""The Jinja expressions of Kerchunk spec version 1 (`{{ name }}` in URLs, `gen` keys, URLs,
offsets and lengths), evaluated with numpy over whole arrays of generated references.

vcube evaluates names, numbers, strings and arithmetic; other Jinja (filters, function
templates) raises `UnsupportedFeatureError`, saying how to expand the references instead.
"""

from __future__ import annotations

import ast
import operator
import re
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from numpy.dtypes import StringDType

from vcube.errors import UnsupportedFeatureError, UnsupportedFormatError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from numpy.typing import NDArray

__all__ = ["STRINGS", "dimension", "integers", "render"]

STRINGS: Final = StringDType()
_EXPRESSION: Final = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_OPERATORS: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def dimension(spec: Any, name: str, where: str) -> NDArray[np.int64]:
    """The values of one dimension of a `gen` entry: a range or a list of integers."""
    try:
        if isinstance(spec, dict):
            return np.arange(
                spec.get("start", 0), spec["stop"], spec.get("step", 1), dtype=np.int64
            )
        values = np.asarray(spec)
        if values.ndim == 1 and values.dtype.kind in "iu":
            return values.astype(np.int64)
    except (KeyError, TypeError, ValueError):
        pass
    raise UnsupportedFormatError(
        f"{where}: dimension {name!r} is neither {{'start', 'stop', 'step'}} nor a list of integers"
    )


def integers(template: Any, env: Mapping[str, Any], n: int, where: str) -> NDArray[np.int64]:
    """An `offset` or `length` of a `gen` entry, evaluated for every generated reference."""
    text = str(template)
    single = _EXPRESSION.fullmatch(text.strip())
    try:
        if single is not None:
            value = np.asarray(_evaluate(single.group(1), env, where))
            if value.dtype.kind not in "iu":
                value = value.astype(STRINGS).astype(np.int64)
        else:
            value = np.asarray(render(text, env, where), dtype=STRINGS).astype(np.int64)
    except (ValueError, TypeError) as err:
        raise UnsupportedFormatError(f"{where}: {text!r} is not an integer ({err})") from err
    return np.broadcast_to(value.astype(np.int64), (n,))


def render(template: str, env: Mapping[str, Any], where: str) -> Any:
    """`template` with each `{{ expression }}` replaced by its value: a str, or a numpy string
    array when the expressions use array-valued names."""
    parts = _EXPRESSION.split(template)  # literal, expression, literal, ...
    pieces = [p if i % 2 == 0 else _text(_evaluate(p, env, where)) for i, p in enumerate(parts)]
    if not any(isinstance(p, np.ndarray) for p in pieces):
        return "".join(pieces)
    out = np.asarray(pieces[0], dtype=STRINGS)
    for piece in pieces[1:]:
        out = np.strings.add(out, np.asarray(piece, dtype=STRINGS))
    return out


def _text(value: Any) -> Any:
    return value.astype(STRINGS) if isinstance(value, np.ndarray) else str(value)


def _evaluate(expression: str, env: Mapping[str, Any], where: str) -> Any:
    """A Jinja expression of names, numbers, strings and arithmetic, over numpy arrays."""

    def value(node: ast.AST) -> Any:
        match node:
            case ast.Constant(value=int() | float() | str() as constant):
                return constant
            case ast.Name(id=name) if name in env:
                return env[name]
            case ast.BinOp(left=left, op=op, right=right) if type(op) in _OPERATORS:
                return _OPERATORS[type(op)](value(left), value(right))
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -value(operand)
        raise UnsupportedFeatureError(
            f"{where}: the template expression {{{{{expression}}}}} is not supported: vcube "
            f"evaluates names, numbers and + - * / // % **. Expand the references with fsspec's "
            f"ReferenceFileSystem(..., simple_templates=False) and write them again."
        )

    try:
        return value(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, TypeError, ZeroDivisionError) as err:
        raise UnsupportedFeatureError(
            f"{where}: cannot evaluate the template expression {{{{{expression}}}}} ({err})"
        ) from err
