"""
The web console's files (C{kaf/api/console/}, shipped as package data): what
C{/console} serves, read once, with their content types.  No file access
per request, and only these names: nothing else of the disk is reachable.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}

_files: Optional[Dict[str, Tuple[bytes, bytes]]] = None


def files() -> Dict[str, Tuple[bytes, bytes]]:
    """name -> (content type, bytes) of every console file."""
    global _files
    if _files is None:
        found = {}
        for name in sorted(os.listdir(FOLDER)):
            kind = _TYPES.get(os.path.splitext(name)[1])
            if kind is not None:
                with open(os.path.join(FOLDER, name), "rb") as f:
                    found[name] = (kind, f.read())
        _files = found
    return _files


def wants_html(accept: Optional[bytes]) -> bool:
    """Does an Accept header come from a browser asking for a page?"""
    return accept is not None and b"text/html" in accept
