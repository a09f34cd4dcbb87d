"""OS errors (and running out of memory) as one line a user can act on: which path, what
happened, what to do.

A read-only or full disk, a cache dir that is a file, an unwritable output dir, a symlink
loop, a machine without the memory a build asks for: none is a bug in trtcas, so none may
reach a user as a traceback. Every command's OS errors end here (``cli.main``), and so do
those of a failed action (``graph.runner``).
"""

from __future__ import annotations

import errno

_WHAT_TO_DO = {
    errno.EROFS: ("is on a read-only file system", "use a writable --cache-dir (or TRTCAS_CACHE_DIR) or output dir"),
    errno.ENOSPC: ("cannot be written: no space left on the device",
                   "free space (e.g. `trtcas cache gc --max-size ...`) or use another --cache-dir or output dir"),
    errno.EDQUOT: ("cannot be written: disk quota exceeded", "free space or use another --cache-dir or output dir"),
    errno.EFBIG: ("cannot be written: file too large for this file system or the process's limit (ulimit -f)",
                  "raise the limit or use another --cache-dir or output dir"),
    errno.EACCES: ("is not accessible: permission denied", "fix its permissions or use another --cache-dir or output dir"),
    errno.EPERM: ("is not accessible: operation not permitted", "fix its permissions or use another path"),
    errno.ENOTDIR: ("has a part that is a file, not a directory", "move that file away or choose another path"),
    errno.EISDIR: ("is a directory where a file is needed", "remove the directory or choose another path"),
    errno.ELOOP: ("has a symlink loop (too many levels of symbolic links)", "fix or remove the link"),
    errno.EEXIST: ("already exists and is not a directory", "move it away or choose another path"),
    errno.ENOENT: ("does not exist", "check the path"),
    errno.ENAMETOOLONG: ("is too long a name for the file system", "choose a shorter path"),
}


def describe_os_error(exc: OSError, unnamed: str = "a file") -> str:
    """``<path>: <what happened>; <what to do>``; ``unnamed`` stands for the path when the
    OS named none (a caller that knows where the file was says so: ``a file under <cache>``)."""
    what, todo = _WHAT_TO_DO.get(exc.errno, (f"failed: {exc.strerror or exc}", "check the path and retry"))
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    subject = " -> ".join(paths) if paths else unnamed
    return f"{subject} {what}; {todo}"


def describe_memory_error(exc: MemoryError) -> str:
    """An allocation the machine could not give (numpy names the size it asked for)."""
    detail = str(exc) or "an allocation failed"
    return (f"out of memory ({detail}); free memory, run fewer actions at once (-j 1), or ask for "
            "a smaller build (a lower max_seq_len or max_batch_size, a smaller profile)")


def describe_resource_error(exc: OSError | MemoryError, unnamed: str = "a file") -> str:
    """:func:`describe_os_error` or :func:`describe_memory_error`, whichever ``exc`` is."""
    return describe_memory_error(exc) if isinstance(exc, MemoryError) else describe_os_error(exc, unnamed)
