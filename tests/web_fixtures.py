"""Fixtures for the web tests (a pytest plugin: `pytest_plugins = ["tests.web_fixtures"]`).

The site is built once per test module by the real build and send code and copied for each test, so every
test starts from the same state without paying for a build each time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter.store.db import get_engine
from tests.web_support import Site, add_editor, make_site, sign_in


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2id with its cheapest parameters: the defaults cost ~0.3 s a hash, too slow for many sign-ins."""
    from argon2 import PasswordHasher, profiles

    from newsletter.web import auth

    monkeypatch.setattr(auth, "_hasher", PasswordHasher.from_parameters(profiles.CHEAPEST))
    monkeypatch.setattr(auth, "_dummy_hash", None)
    monkeypatch.setattr(auth, "_verify_seconds", 0.0)


@pytest.fixture(scope="module")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Site:
    from argon2 import PasswordHasher, profiles

    from newsletter.web import auth

    root = tmp_path_factory.mktemp("site")
    site = make_site(root)
    saved = auth._hasher
    auth._hasher = PasswordHasher.from_parameters(profiles.CHEAPEST)
    try:
        add_editor(site.engine)
    finally:
        auth._hasher = saved
    site.engine.dispose()  # closes the connections, which folds SQLite's write-ahead log into the file
    return site


def copy_site(template: Site, root: Path) -> Site:
    for name in ("schedules", "outbox"):
        if (template.root / name).exists():
            shutil.copytree(template.root / name, root / name)
    shutil.copy(template.root / "newsletter.db", root / "newsletter.db")
    settings = replace(template.settings, database_url=f"sqlite:///{root / 'newsletter.db'}",
                       outbox_dir=root / "outbox", schedules_dir=root / "schedules", templates_dir=root / "templates")
    return Site(settings, get_engine(settings.database_url), root, template.sent_issue_id, template.draft_issue_id)


@pytest.fixture
def site(site_template: Site, tmp_path: Path) -> Site:
    return copy_site(site_template, tmp_path)


@pytest.fixture
def client(site: Site) -> Iterator:
    from starlette.testclient import TestClient

    from newsletter.web.app import create_app

    # https, as the base URL says: the session cookie is Secure and would not come back over plain http.
    with TestClient(create_app(site.settings, engine=site.engine), base_url="https://testserver") as test_client:
        yield test_client


@pytest.fixture
def editor_client(client):  # noqa: ANN001, ANN201
    response = sign_in(client)
    assert response.status_code == 303, response.text
    return client
