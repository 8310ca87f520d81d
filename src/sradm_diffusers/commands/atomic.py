"""Writing a file so that its final name only ever holds complete content.

What is at the output path decides how it is written:

- nothing, or a regular file: a temporary file beside it is renamed onto it;
- a symbolic link (also a chain of them): the link is kept and its final **regular** target is replaced the same
  way (the temporary file is made beside the target, so the rename stays within one file system);
- anything else (a folder, a character or block device such as a copy of ``/dev/full``, a FIFO, a socket, a link
  that loops): refused with :class:`NotARegularFileError`, never replaced. A rename would swap a device node or a
  named pipe for a plain file, and writing into it directly would not be atomic.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from typing import Iterator

_KINDS = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
)


class NotARegularFileError(OSError):
    """The output path exists but is not a regular file (nor a symbolic link to one): it is not replaced."""


def file_kind(mode: int) -> str:
    """'a regular file', 'a folder', 'a character device', ... for an ``os.stat`` ``st_mode``."""
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def output_target(path: str | os.PathLike) -> str:
    """The absolute path that writing ``path`` replaces: ``path`` itself, or the final target of a symbolic link.

    Raises:
        NotARegularFileError: ``path`` (or what a link points to) exists and is not a regular file, or ``path`` is a
            link that loops. The message names the path, what it is and what to do.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode  # follows links
    except OSError as error:
        if error.errno != errno.ELOOP:  # missing (or a parent is a file): nothing there to replace
            return os.path.realpath(path)
        raise NotARegularFileError(
            f"{path} is a symbolic link that loops ({error.strerror}); remove it or pass another file name."
        ) from error
    if not stat.S_ISREG(mode):
        via = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise NotARegularFileError(
            f"{path}{via} is {file_kind(mode)}, not a regular file; outputs are written to a temporary file and "
            "renamed, which would replace it: pass a regular file name."
        )
    return os.path.realpath(path)


@contextmanager
def replacing(path: str) -> Iterator[str]:
    """Yield a temporary path ``.<stem>.tmp-<pid><ext>`` next to the file ``path`` stands for
    (:func:`output_target`); on success rename it onto that file (:func:`os.replace`), on any error remove it, so the
    file keeps its old content or holds the complete new one. A symbolic link at ``path`` is kept.

    Raises:
        NotARegularFileError: before anything is written, when ``path`` is not a regular file or a link to one.
    """
    target = output_target(path)
    folder, name = os.path.split(target)
    stem, ext = os.path.splitext(name)
    tmp = os.path.join(folder, f".{stem}.tmp-{os.getpid()}{ext}")
    try:
        yield tmp
        os.replace(tmp, target)
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
