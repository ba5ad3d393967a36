"""README and .env.example document every environment variable the settings read."""

from __future__ import annotations

import re

from tests.base import ROOT


def variables_read_by_settings() -> set[str]:
    text = (ROOT / "portal" / "settings.py").read_text()
    return set(re.findall(r'env(?:bool|int|float|list|secret)?\("([A-Z][A-Z0-9_]+)"', text))


def test_every_variable_is_documented():
    names = variables_read_by_settings()
    assert len(names) > 30
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    assert sorted(n for n in names if f"`{n}`" not in readme) == []
    assert sorted(n for n in names if not re.search(rf"^{n}=", example, re.M)) == []
