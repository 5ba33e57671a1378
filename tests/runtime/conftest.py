"""Fixtures for the gateway runtime tests (helpers live in support.py).

The catalog is manifests/*.yaml compiled by the real compiler (`support.build_gateway()`)
plus the quota plans of the tests (`support.build_gateway`). When the compiler's
output exists (`generated/fastn_gateway/catalog`), end-to-end tests also drive that package.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.runtime import catalog as c
from generator.runtime.crypto import CredentialCipher, generate_key
from generator.runtime.store import Store, make_engine
from tests.runtime.support import (  # noqa: F401
    GENERATED,
    ROOT,
    FakeUpstream,
    Sleeps,
    UvicornThread,
    World,
    build_gateway,
    free_port,
    generated_available,
    leaf_exception,
    make_runtime,
    populate,
    with_filler_tools,
)

PG_ENV = "MCPFORGE_TEST_POSTGRES_URL"


@pytest.fixture(scope="session")
def gateway() -> c.GatewaySpec:
    return build_gateway()


@pytest.fixture
def cipher() -> CredentialCipher:
    return CredentialCipher([generate_key()])


def _pg_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    base = _pg_url()
    if not base:
        pytest.skip(
            f"PostgreSQL not available: set {PG_ENV} (e.g. from .ci/postgres.sh) to run this test"
        )
    import sqlalchemy as sa

    schema = "t_" + uuid.uuid4().hex[:12]
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "gateway.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(db_url: str, gateway: c.GatewaySpec, cipher: CredentialCipher) -> Iterator[Store]:
    s = Store(make_engine(db_url), gateway, cipher)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def sqlite_store(
    tmp_path: Path, gateway: c.GatewaySpec, cipher: CredentialCipher
) -> Iterator[Store]:
    s = Store(make_engine(str(tmp_path / "gateway.db")), gateway, cipher)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    with fake.server:
        yield fake


@pytest.fixture
async def world(sqlite_store: Store, gateway: c.GatewaySpec, upstream: FakeUpstream) -> Any:
    runtime = make_runtime(sqlite_store, gateway, upstream)
    w = populate(sqlite_store, upstream, runtime)
    yield w
    await runtime.aclose()


@pytest.fixture
async def pg_world(
    pg_url: str, gateway: c.GatewaySpec, cipher: CredentialCipher, upstream: FakeUpstream
) -> Any:
    store = Store(make_engine(pg_url), gateway, cipher)
    store.migrate()
    runtime = make_runtime(store, gateway, upstream)
    w = populate(store, upstream, runtime)
    yield w
    await runtime.aclose()
    store.dispose()


@pytest.fixture
def sleeps() -> Sleeps:
    """Backoff waits, recorded instead of slept (pass as the executor's `sleep`)."""
    return Sleeps()
