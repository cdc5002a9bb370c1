"""Whether a command-line tool can write its output file, checked before it does the work."""

from __future__ import annotations

import os
import tempfile

__all__ = ["unwritable_reason"]


def unwritable_reason(path: str | os.PathLike[str]) -> str | None:
    """Why a file could not be written to ``path``, or None when it can.

    Checked before a run that may take minutes, rather than found out when it ends: the folder
    (or the nearest existing folder above it, in which the missing ones would be created) must
    take a new file, and ``path`` must not be a folder or a read-only file. A temporary file (or
    folder) is really created and removed, since ``os.access`` cannot tell (root, ``/proc``,
    read-only file systems).
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return f"{path} is a directory"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{path} is not writable"
    folder = os.path.dirname(path)
    base = folder
    while not os.path.exists(base):
        base = os.path.dirname(base)
    if not os.path.isdir(base):
        return f"{base} is not a directory"
    try:
        if base == folder:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".jrmsprop-"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=base, prefix=".jrmsprop-"))
    except OSError as e:
        return f"cannot write to {folder}: {e.strerror or e}"
    return None
