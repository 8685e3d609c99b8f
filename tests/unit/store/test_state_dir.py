"""State directories are created owner-only (0700) whatever the umask: the control
plane's store, and `gossamer up`'s directory of logs, sidecar files and CA bundle."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gossamer.local.spec import LocalApp
from gossamer.local.up import LocalRun
from gossamer.store.files import private_dir
from gossamer.store.sqlite import SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_missing_directories_are_created_0700(tmp_path: Path, umask_000: None) -> None:
    private_dir(tmp_path / "a" / "b" / "state")
    for path in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "state"):
        assert mode(path) == 0o700, path


def test_a_umask_that_removes_the_owners_bits_still_gives_0700(tmp_path: Path) -> None:
    old = os.umask(0o777)
    try:
        private_dir(tmp_path / "state")
    finally:
        os.umask(old)
    assert mode(tmp_path / "state") == 0o700


def test_an_existing_directory_is_left_alone_with_a_warning_if_others_may_write(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="gossamer.store.files"):
        private_dir(shared)
    assert mode(shared) == 0o777
    assert [r.getMessage() for r in caplog.records] == [
        f"{shared} can be written by other users (mode 777); make it private with "
        f"`chmod 700 {shared}`"]
    caplog.clear()
    shared.chmod(0o755)
    private_dir(shared)
    assert caplog.records == []


async def test_the_store_directory_is_private(tmp_path: Path, umask_000: None) -> None:
    store = SqliteStore(str(tmp_path / "state" / "gossamer.db"))
    try:
        assert mode(tmp_path / "state") == 0o700
        assert mode(tmp_path / "state" / "gossamer.db") == 0o600
    finally:
        await store.close()


def test_gossamer_up_state_dir_is_private(tmp_path: Path, umask_000: None) -> None:
    LocalRun(LocalApp([], []), tmp_path / "up" / "state")
    assert mode(tmp_path / "up") == 0o700
    assert mode(tmp_path / "up" / "state") == 0o700
