"""Settings read in process: the embedded database's folder comes from TODO_API_DATA_DIR through
Settings like every other variable, and the platform's place otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from todo_api import embedded
from todo_api.settings import load


def test_todo_api_data_dir_is_expanded_and_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert load({"TODO_API_DATA_DIR": "~/data"}).data_dir == tmp_path / "data"
    assert load({"TODO_API_DATA_DIR": " relative "}).data_dir == tmp_path / "relative"
    assert embedded.data_dir(load({"TODO_API_DATA_DIR": "~/data"}).data_dir) == tmp_path / "data"


def test_without_todo_api_data_dir_the_platforms_folder_is_used() -> None:
    for env in ({}, {"TODO_API_DATA_DIR": "   "}):
        settings = load(env)
        assert settings.data_dir is None
        assert embedded.data_dir(settings.data_dir) == embedded.data_dir()
        assert embedded.data_dir().is_absolute()
