from __future__ import annotations

import pytest

from tests.efota.helpers import efota_world


@pytest.fixture
def efota(sandbox_account, knox_sandbox, settings):
    return efota_world(knox_sandbox, settings, sandbox_account)
