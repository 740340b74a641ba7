"""A relative path in the config is the command's working directory's, made absolute once, by
the command (minipod/config.py PATHS, export): a pod's janitor, supervisor and pause run in /
and read the config again from $MINIPOD_CONFIG."""

from __future__ import annotations

import os

import pytest

from minipod import config


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return str(tmp_path)


def test_relative_paths_in_the_file_are_the_commands_directorys(cwd):
    with open("c.toml", "w") as f:
        f.write('root = "run"\ndata_root = "./data"\ncgroup_root = "cg"\n'
                'janitor = "python"\nregistries = "/etc/r.toml"\n')
    cfg = config.load("c.toml", env={})
    assert cfg.root == os.path.join(cwd, "run")
    assert cfg.data_root == os.path.join(cwd, "data")
    assert cfg.image_root == os.path.join(cwd, "data", "images")
    assert cfg.cgroup_root == os.path.join(cwd, "cg")
    assert cfg.janitor == "python"  # a kind of janitor, not a file
    assert cfg.registries == "/etc/r.toml"
    assert cfg.auth_file == ""  # "" still means: search


@pytest.mark.parametrize("key", ["pause", "janitor"])
def test_python_picks_a_helper_and_a_relative_file_is_a_file(cwd, key):
    with open("c.toml", "w") as f:
        f.write(f'{key} = "python"\n')
    assert getattr(config.load("c.toml", env={}), key) == "python"
    with open("c.toml", "w") as f:
        f.write(f'{key} = "bin/{key}"\n')
    assert getattr(config.load("c.toml", env={}), key) == os.path.join(cwd, "bin", key)


def test_export_makes_what_the_started_processes_read_absolute(cwd):
    env = {"MINIPOD_ROOT": "r", "MINIPOD_TRACE": "t.log", "MINIPOD_JANITOR": "python",
           "MINIPOD_BRIDGE": "br0", "MINIPOD_PAUSE": "python"}
    config.export("sub/c.toml", env)
    assert env == {"MINIPOD_CONFIG": os.path.join(cwd, "sub", "c.toml"),
                   "MINIPOD_ROOT": os.path.join(cwd, "r"),
                   "MINIPOD_TRACE": os.path.join(cwd, "t.log"),
                   "MINIPOD_JANITOR": "python", "MINIPOD_BRIDGE": "br0",
                   "MINIPOD_PAUSE": "python"}


def test_without_a_config_option_the_environments_file_stays_the_one(cwd):
    env = {"MINIPOD_CONFIG": "c.toml"}
    config.export(None, env)
    assert env == {"MINIPOD_CONFIG": os.path.join(cwd, "c.toml")}
    env = {}
    config.export(None, env)
    assert env == {}  # the default file, which is absolute
