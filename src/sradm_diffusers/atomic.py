"""Writing a file so that its final name only ever holds complete content."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yield a temporary path ``.<stem>.tmp-<pid><ext>`` next to ``path``; on success rename it to ``path``
    (:func:`os.replace`), on any error remove it, so ``path`` keeps its old content or holds the complete new one."""
    folder, name = os.path.split(os.path.abspath(path))
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.tmp-{os.getpid()}{ext}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def check_writable_folder(folder: str) -> None:
    """Raise ``OSError`` unless a file can be created in ``folder`` (tried for real: permission bits do not tell
    about read-only mounts, and root ignores them). The probe file is removed at once."""
    handle, probe = tempfile.mkstemp(prefix=".sradm-probe-", dir=folder)
    os.close(handle)
    os.remove(probe)
