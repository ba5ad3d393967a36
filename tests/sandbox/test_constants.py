"""The sandbox's constants: complete where knox-api.md lists codes, and independent of the client code.

Their values are not mirrored here: what each one rests on is in portal/knox/evidence.py (tests/test_evidence.py),
and what the sandbox does with it is tested by its behaviour tests."""

from __future__ import annotations

from sandbox import constants as c


def test_every_section_3_10_code_has_a_status() -> None:
    for code in (
        2000000,
        40000004,
        40000011,
        40000044,
        4012250,
        40300000,
        40400001,
        50000000,
        4002101,
        4042104,
        4092100,
    ):
        assert code in c.KDP_ERROR_HTTP_STATUS


def test_the_sandbox_imports_no_client_code() -> None:
    import ast
    from pathlib import Path

    root = Path(c.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in {"portal", "kdp", "guard", "efota"}, f"{path} imports {name}"
