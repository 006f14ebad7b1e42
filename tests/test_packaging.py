"""
Installing Kaf: the wheel carries the twistd plugin, an editable install
keeps it visible to twistd, and C{python -m kaf} is the C{kaf} command.
"""
from __future__ import annotations

import http.client
import os
import shutil
import subprocess
import sys
import zipfile
from typing import Any, List

from server import KafServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def test_twistd_lists_kaf_when_run_from_any_folder(tmp_path: Any) -> None:
    done = subprocess.run([os.path.join(BIN, "twistd"), "--help"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert any(line.split()[:1] == ["kaf"] for line in done.stdout.splitlines()), done.stdout


def test_python_m_kaf_runs_the_kaf_command(tmp_path: Any) -> None:
    done = subprocess.run([sys.executable, "-m", "kaf", "--help"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: kaf ")


def test_the_wheel_holds_the_package_and_the_twistd_plugin(tmp_path: Any) -> None:
    # Built by the pyproject.toml's setuptools backend, as pip builds it,
    # from a copy: a build leaves build/ and *.egg-info behind.
    source = tmp_path / "source"
    for name in ("kaf", "twisted", "setup.cfg", "setup.py", "pyproject.toml", "README.rst"):
        copy = shutil.copytree if os.path.isdir(os.path.join(REPO, name)) else shutil.copy
        copy(os.path.join(REPO, name), str(source / name))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                           "--no-build-isolation", "-w", str(tmp_path / "wheels"), str(source)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    [wheel] = os.listdir(str(tmp_path / "wheels"))
    names = set(zipfile.ZipFile(str(tmp_path / "wheels" / wheel)).namelist())
    assert {"twisted/plugins/kaf_plugin.py", "kaf/__main__.py", "kaf/tap.py"} <= names
    # The subpackages, the syncer's child script and the console's static files.
    assert {"kaf/api/web.py", "kaf/engines/file/store.py", "kaf/engines/file/_syncer.py",
            "kaf/engines/nats/engine.py", "kaf/engines/nats/bridge.py",
            "kaf/api/console/index.html", "kaf/api/console/console.js",
            "kaf/api/console/console.css"} <= names
    assert "twisted/__init__.py" not in names and "twisted/plugins/__init__.py" not in names


def test_make_installs_with_a_supported_editable_mode() -> None:
    # setuptools' "compat" editable mode is deprecated; the package_dir of
    # setup.cfg makes the default mode put this folder on sys.path instead.
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()
    assert "editable_mode=compat" not in makefile
    assert "pip install -q -e '.[test]'" in makefile
    with open(os.path.join(REPO, "pyproject.toml")) as f:
        assert 'build-backend = "setuptools.build_meta"' in f.read()


def makefile_twistd_flags() -> List[str]:
    """The twistd flags of C{make run}, as README.rst quotes them too."""
    with open(os.path.join(REPO, "Makefile")) as f:
        recipe = f.read().split("\nrun: venv\n", 1)[1].splitlines()[0].split()
    assert recipe[0] == "$(BIN)/twistd" and recipe[-2:] == ["kaf", "$(ARGS)"], recipe
    flags = recipe[1:-2]
    with open(os.path.join(REPO, "README.rst")) as f:
        assert "``.venv/bin/twistd %s kaf [options]``" % (" ".join(flags),) in f.read()
    return flags


def test_two_servers_run_side_by_side_from_one_folder(tmp_path: Any) -> None:
    flags = makefile_twistd_flags()
    here = str(tmp_path / "here")
    os.mkdir(here)
    with KafServer(str(tmp_path / "a"), workdir=here, twistd_flags=flags) as a, \
            KafServer(str(tmp_path / "b"), workdir=here, twistd_flags=flags) as b:
        for server, body in ((a, b"to a"), (b, b"to b")):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.request("POST", "/put/log", body)
            assert connection.getresponse().read() == b"1"
            connection.close()
    assert os.listdir(here) == []
    with open(str(tmp_path / "b" / "log"), "rb") as f:
        assert f.read() == b"KAF_DB|v1|0\nKAF_MSG|1|4\nto b"
