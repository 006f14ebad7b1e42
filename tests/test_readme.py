"""
README.rst's transcripts are what a user sees: each C{$ command} of the
curl and C{kaf} sections runs, in order, against a fresh real server, and
prints exactly the lines shown under it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Iterator, List, Tuple

import pytest

from server import KafServer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.rst")
URL = "http://127.0.0.1:7749"
BACKUP = "http://backup:7749"

#: Transcript = (command, the lines it prints).
Transcript = Tuple[str, str]


def section(title: str) -> str:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start = text.index("\n%s\n%s\n" % (title, "-" * len(title)))
    end = re.compile(r"\n\n\n[^\n]+\n-{3,}\n").search(text, start + 1)
    return text[start:end.start() if end else len(text)]


def transcripts(title: str) -> List[Transcript]:
    """The C{$ …} commands of a section's literal blocks, with their output."""
    found: List[Transcript] = []
    for block in re.findall(r"::\n\n((?:    .*\n|\n)+)", section(title)):
        lines = [line[4:] for line in block.rstrip("\n").split("\n")]
        if not lines[0].startswith("$ "):
            continue
        for line in lines:
            if line.startswith("$ "):
                found.append((line[2:], ""))
            else:
                command, output = found[-1]
                found[-1] = (command, output + line + "\n")
    return found


def pattern(shown: str) -> "re.Pattern[str]":
    """
    What the shown output matches: an archive's time and a copy's seconds
    vary, a line of C{…} stands for lines left out, and a C{…} in a line for
    what varies there (a date).
    """
    out = []
    for line in shown.splitlines(keepends=True):
        if line.strip() == "…":
            out.append(r"(?:.*\n)*?")
            continue
        escaped = r".*".join(re.escape(part) for part in line.split("…"))
        escaped = re.sub(r"2026\\-\d\d\\-\d\dT\d\d_\d\d_\d\dZ",
                         r"\\d{4}-\\d\\d-\\d\\dT\\d\\d_\\d\\d_\\d\\dZ", escaped)
        escaped = re.sub(r"in\\ \d+\\.\ds", r"in\\ \\d+\\.\\ds", escaped)
        out.append(escaped)
    return re.compile("".join(out) + r"\Z")


@pytest.fixture
def servers() -> Iterator[Tuple[KafServer, KafServer]]:
    with tempfile.TemporaryDirectory(prefix="kaf-readme-") as folder:
        with KafServer(os.path.join(folder, "a")) as a, \
                KafServer(os.path.join(folder, "b")) as b:
            yield a, b


def run(command: str, a: KafServer, b: KafServer) -> str:
    command = command.replace(URL, a.url("")).replace(BACKUP, b.url(""))
    env = dict(os.environ, KAF_URL=a.url(""),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    done = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    return done.stdout.decode("utf-8").replace("\r\n", "\n").replace(
        a.url(""), URL).replace(b.url(""), BACKUP)


@pytest.mark.parametrize("title", ["Using it with curl", "The ``kaf`` command"])
def test_every_transcript_prints_what_the_readme_shows(
        title: str, servers: Tuple[KafServer, KafServer]) -> None:
    found = transcripts(title)
    assert len(found) >= 8
    for command, shown in found:
        printed = run(command, *servers)
        assert pattern(shown).match(printed), (command, shown, printed)


def test_the_transcripts_are_read_as_a_user_reads_them() -> None:
    curl = transcripts("Using it with curl")
    assert curl[0][1].endswith("1\n")
    assert all(shown == "" or shown.endswith("\n") for _, shown in curl)
    assert pattern("a\n…\nz\n").match("a\nb\nc\nz\n")
    assert pattern("Date: …\n").match("Date: Sun, 06 Dec 2026 03:19:45 GMT\n")
    assert not pattern("1\n").match("1")
