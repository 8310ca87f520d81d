"""What every save of a training run shares: the kill tests' crash points, the disk-full diagnosis, file modes.

- :func:`crash_point`: ``$SRADM_TRAIN_KILL_AT`` names a point where the process SIGKILLs itself (fault injection).
- :class:`DiskFullError`, :func:`disk_full_error`: a failed save on a full disk as one actionable error (exit 1).
- :func:`apply_umask`: saved files get the umask's permissions (safetensors writes them 0600).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal

KILL_ENV = "SRADM_TRAIN_KILL_AT"


def crash_point(name: str) -> None:
    """Fault injection for the kill tests: SIGKILL this process when ``$SRADM_TRAIN_KILL_AT`` equals ``name``."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class DiskFullError(OSError):
    """No space left on the device while saving a checkpoint or the model (exit status 1)."""


def _is_disk_full(error: BaseException, folder: str) -> bool:
    """True when ``error`` (or an exception it chains) is ENOSPC/EDQUOT, or torch's zip writer failed
    ("unexpected pos", "file write failed") while ``folder``'s file system has less than 1 MiB left."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(error)
        if "No space left on device" in text:
            return True
        if "unexpected pos" in text or "file write failed" in text:
            try:
                return shutil.disk_usage(folder).free < 2**20
            except OSError:
                return False
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(error: BaseException, what: str, folder: str) -> DiskFullError | None:
    """A :class:`DiskFullError` that says "no space left on device" and where, if ``error`` is a full disk."""
    if not _is_disk_full(error, folder):
        return None
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"no space left on device while saving {what} in {os.path.abspath(folder)} ({free}); the unfinished save was "
        "removed and earlier checkpoints are kept. Free some space (or keep fewer with --checkpoints_total_limit, or "
        "use another --output_dir), then continue with --resume_from_checkpoint latest."
    )


def apply_umask(folder: str) -> None:
    """Give the files under ``folder`` the permissions of the umask (``0666 & ~umask``): safetensors' writer
    creates them readable by the owner only (0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for root, _subdirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~umask)
