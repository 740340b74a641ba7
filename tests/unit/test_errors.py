"""One error tree: every error minipod raises on purpose derives from MinipodError, so the CLI
prints it as one line and exits 1 -- anything else is a bug and says "internal error"."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import minipod
from minipod import config
from minipod.errors import MinipodError

# Control flow inside one function, never raised out of its module.
PRIVATE_OK = {"_Timeout", "_Failed", "_Cancelled", "_Stop"}


def _modules():
    for info in pkgutil.walk_packages(minipod.__path__, "minipod."):
        if info.name.endswith(("__main__", "pause_fallback")):
            continue  # a script entry point; the Python pause imports nothing from minipod
        yield importlib.import_module(info.name)


def test_every_exception_class_of_minipod_derives_from_the_base_error():
    strays = []
    for mod in _modules():
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or not issubclass(cls, BaseException):
                continue
            if name not in PRIVATE_OK and not issubclass(cls, MinipodError):
                strays.append(f"{mod.__name__}.{name}")
    assert strays == []


@pytest.mark.parametrize("text, message", [
    ('cgroup_driver = "bogus"', r"cgroup_driver: unknown driver 'bogus' \(auto, systemd, cgroupfs\)"),
    ('bridge = 5', r"bridge: expected a string, got 5"),
    ('backoff_max = "soon"', r"backoff_max: expected a number, got 'soon'"),
    ('colour = "blue"', r"unknown setting\(s\): colour"),
])
def test_a_config_mistake_is_a_user_error_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "config.toml"
    path.write_text(text + "\n")
    with pytest.raises(MinipodError, match=rf"^{path}: {message}$"):
        config.load(str(path), env={})
