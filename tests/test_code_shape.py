"""Small functions (STYLE.md, "Shape"): no function in the package runs over 45 lines.

A function's length is counted from its ``def`` line to its last line, decorators left out;
methods and nested functions count on their own. When this fails, split the function it names
into well-named smaller ones rather than raising the limit.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import ptif

MAX_LINES = 45
PACKAGE = Path(ptif.__file__).parent


def long_functions(source: str, name: str, limit: int = MAX_LINES) -> Iterator[str]:
    """``file:line qualified.name (N lines)`` for each function of ``source`` over ``limit``."""

    def visit(node: ast.AST, scope: str) -> Iterator[str]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = f"{scope}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = (child.end_lineno or child.lineno) - child.lineno + 1
                    if lines > limit:
                        yield f"{name}:{child.lineno} {qualified} ({lines} lines)"
                yield from visit(child, f"{qualified}.")
            else:
                yield from visit(child, scope)

    yield from visit(ast.parse(source, name), "")


def test_no_function_in_the_package_is_over_45_lines() -> None:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20, f"{PACKAGE}: expected the package's modules"
    found = [
        problem
        for path in files
        for problem in long_functions(path.read_text(), str(path.relative_to(PACKAGE.parent)))
    ]
    assert found == [], "split these into smaller functions:\n" + "\n".join(found)


def test_the_count_names_a_long_method_and_spares_a_short_one() -> None:
    body = "".join(f"        x{n} = {n}\n" for n in range(MAX_LINES - 1))
    source = (
        "class Store:\n"
        "    @property\n"
        f"    def long(self):\n{body}        return 0\n"
        f"    def short(self):\n{body}\n"
    )
    assert list(long_functions(source, "x.py")) == [f"x.py:3 Store.long ({MAX_LINES + 1} lines)"]
