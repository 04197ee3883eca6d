"""Every failure code is declared once, in ``ptif.errors.CODES``, and named by its constant.

The error classes are checked by importing every module of the package; the places that raise,
compare or record a code are checked by reading the source with :mod:`ast`, so a code on a path
no test runs is caught too. README.md's table of codes is checked against the declarations.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import ptif
from ptif import errors
from ptif.errors import CODES, DISK_FULL, UNDECODABLE, PtifError, UndecodableError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "ptif"
#: Modules that run something when imported.
ENTRY_POINTS = {"ptif.__main__"}
#: Codes declared but raised nowhere, each with the reason it is kept (old failure records…).
RESERVED: dict[str, str] = {}
#: The constant of each code, by name: ``UNDECODABLE`` for ``undecodable``.
CONSTANTS = {
    name: value
    for name, value in vars(errors).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, str)
}


# the table ------------------------------------------------------------------------------------


def test_each_code_has_one_constant_named_after_it() -> None:
    assert sorted(CONSTANTS.values()) == sorted(CODES)
    for name, code in CONSTANTS.items():
        assert name == code.upper().replace("-", "_")
        assert CODES[code].code == code


def test_a_declaration_is_read_only() -> None:
    with pytest.raises(AttributeError):
        CODES[UNDECODABLE].disposition = errors.Disposition.RETRY  # type: ignore[misc]
    assert CODES[UNDECODABLE].permanent


def test_an_undeclared_code_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown failure code 'nonsense'"):
        PtifError("x", code="nonsense")
    with pytest.raises(ValueError, match="unknown failure code 'nonsense'"):

        class Nonsense(PtifError):
            code = "nonsense"

    error = PtifError("x", code=DISK_FULL)
    assert error.code == "disk-full" and not error.permanent
    error.code = "disk-ful"
    with pytest.raises(ValueError, match="unknown failure code 'disk-ful'"):
        _ = error.permanent


def test_the_disposition_comes_from_the_table() -> None:
    assert UndecodableError("x").permanent
    assert PtifError("x", code=UNDECODABLE).permanent
    assert not PtifError("x").permanent  # internal: a bug is retried, and counted
    for code, declared in CODES.items():
        assert PtifError("x", code=code).permanent is declared.permanent


# the error classes ----------------------------------------------------------------------------


def import_package() -> list[str]:
    """Import every module of ptif; the names of those whose optional dependency is missing."""
    skipped = []
    for module in pkgutil.walk_packages(ptif.__path__, "ptif."):
        if module.name in ENTRY_POINTS:
            continue
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as error:
            if (error.name or "ptif").partition(".")[0] == "ptif":
                raise
            skipped.append(f"{module.name} (needs {error.name})")
    return skipped


def subclasses(cls: type[PtifError]) -> Iterator[type[PtifError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)


def test_every_error_class_has_a_declared_code() -> None:
    skipped = import_package()
    found = {cls for cls in subclasses(PtifError) if cls.__module__.startswith("ptif.")}
    names = {cls.__name__ for cls in found}
    expected = {"ConfigError", "OutputWriteError", "StoreError", "BadMarker", "Stopping"}
    assert expected <= names, f"the package was not imported whole; skipped: {skipped}"
    for cls in found:
        assert cls.code in CODES, f"{cls.__module__}.{cls.__qualname__}: code {cls.code!r}"


# the source -----------------------------------------------------------------------------------


def is_code_expression(node: ast.expr) -> bool:
    """``x.code``, ``x.get("code")`` or ``x["code"]``: a failure code read from somewhere."""
    if isinstance(node, ast.Attribute):
        return node.attr == "code"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr == "get" and bool(node.args) and is_key(node.args[0])
    return isinstance(node, ast.Subscript) and is_key(node.slice)


def is_key(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == "code"


def code_value_problem(node: ast.expr) -> str | None:
    """What is wrong with ``node`` where a failure code is given, or None: it must be a declared
    constant (bare or as ``errors.X``), a code read from another error (``error.code``), None,
    or a choice between those."""
    if isinstance(node, ast.BoolOp):
        return next(filter(None, map(code_value_problem, node.values)), None)
    if isinstance(node, ast.IfExp):
        return code_value_problem(node.body) or code_value_problem(node.orelse)
    if isinstance(node, ast.Constant):
        return f"the literal {node.value!r}" if node.value is not None else None
    if isinstance(node, ast.Name):
        return None if node.id in CONSTANTS else f"{node.id}, not a constant of ptif.errors"
    if isinstance(node, ast.Attribute) and (node.attr == "code" or node.attr in CONSTANTS):
        return None
    return f"{ast.unparse(node)}, not a constant of ptif.errors"


def compared_problem(node: ast.expr) -> str | None:
    """What is wrong with ``node`` compared against a code: a literal, or a constant that
    names no code. Variables pass (such as the codes ``ptif retry --code`` was given)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return f"the literal {node.value!r}"
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return next(filter(None, map(compared_problem, node.elts)), None)
    if isinstance(node, ast.Name) and node.id.isupper() and node.id not in CONSTANTS:
        return f"{node.id}, not a constant of ptif.errors"
    return None


def code_sites(tree: ast.AST) -> Iterator[tuple[int, str, str | None]]:
    """Each place in ``tree`` that gives, records or compares a failure code: line, what it
    is, and what is wrong with it (None if nothing)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield node.lineno, "code=", code_value_problem(keyword.value)
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name == "release_noting" and node.args:
                yield node.lineno, "release_noting", code_value_problem(node.args[0])
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value:
                    targets = getattr(statement, "targets", [getattr(statement, "target", None)])
                    if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                        problem = code_value_problem(statement.value)
                        yield statement.lineno, f"{node.name}.code", problem
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(is_code_expression, operands)):
                problems = [compared_problem(o) for o in operands if not is_code_expression(o)]
                yield node.lineno, "comparison", next(filter(None, problems), None)
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if key is not None and is_key(key):
                    yield node.lineno, '"code":', code_value_problem(value)


def source_files() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "errors.py" in files
    return files


def test_the_source_names_codes_by_their_constants() -> None:
    sites, problems = 0, []
    for path in source_files():
        for line, what, problem in code_sites(ast.parse(path.read_text(), str(path))):
            sites += 1
            if problem:
                problems.append(f"{path.relative_to(REPO)}:{line}: {what} {problem}")
    assert not problems, "declare codes in ptif.errors and use the constants:\n" + "\n".join(
        problems
    )
    assert sites > 30  # the scan saw the package's codes


@pytest.mark.parametrize(
    "source",
    [
        'raise PtifError("x", code="disk-full")',
        'raise PtifError("x", code=error.code if error else "internal")',
        'raise PtifError("x", code=DISKFULL)',
        'class E(PtifError):\n    code = "lease-lost"',
        'lease.release_noting("internal", "why")',
        'lease.release_noting(result.code or "internal", "why")',
        'ok = error.code == "store-unreachable"',
        'ok = "store-unreachable" != error.code',
        'ok = record.get("code") in ("undecodable", UNSUPPORTED)',
        'ok = record["code"] == NOT_A_CODE',
        'record = {"key": key, "code": "bad-marker"}',
    ],
)
def test_the_scan_finds_a_bare_code(source: str) -> None:
    assert [problem for _, _, problem in code_sites(ast.parse(source)) if problem]


def test_every_declared_code_is_used() -> None:
    used: set[str] = set()
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
    unused = {code for name, code in CONSTANTS.items() if name not in used}
    assert unused == set(RESERVED)


# README.md ------------------------------------------------------------------------------------


def readme_rows() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = re.search(r"^## Errors\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no Errors section"
    return re.findall(r"^\| `.*\|$", section.group(1), re.M)


def test_the_readme_lists_every_code_as_declared() -> None:
    expected = [
        f"| `{c.code}` | {c.meaning} | {'no' if c.permanent else 'yes'} |" for c in CODES.values()
    ]
    assert readme_rows() == expected, "README.md's table of codes should be:\n" + "\n".join(
        expected
    )
