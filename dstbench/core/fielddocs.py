"""Docstrings of dataclass fields: the string literal written on the line after a field.

Python keeps no such docstring at run time, so it is read from the class's source. One source for what
an option means: the CLI's ``--help`` and ``dstbench methods --details`` both print these.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
from functools import cache

__all__ = ["field_docs"]


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: docstring}`` for ``cls`` and its dataclass bases (subclasses win)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (a REPL class): no docs, not an error
            continue
        body = next((node.body for node in tree.body if isinstance(node, ast.ClassDef)), [])
        for node, following in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(following.value.value).split())
    names = {f.name for f in dataclasses.fields(cls)}  # class variables are not options
    return {name: doc for name, doc in docs.items() if name in names}
