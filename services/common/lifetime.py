"""Processes that end with their parent: Linux's parent-death signal (`PR_SET_PDEATHSIG`).

A child whose parent dies is re-parented to init and runs on unwatched: an RQ scheduler left
behind by a killed worker kept its supervisor's output pipe open, so the death went unseen.
"""

from __future__ import annotations

import ctypes
import os
import sys

# <linux/prctl.h>
_PR_SET_PDEATHSIG = 1
# Resolved once, in the parent: after a fork only async-signal-safe work is wise.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def die_with_parent(signum: int, *, parent_pid: int) -> None:
    """Has Linux send `signum` to this process when `parent_pid` (its parent) ends.

    Call it in the child right after the fork. Linux sends the signal when the *thread* that
    forked ends, so fork from a thread that lives as long as the child should. Elsewhere than
    Linux it does nothing (a supervisor there still ends its children's process groups).
    """
    if _LIBC is None:
        return
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    # The parent may have died between the fork and the call: then no signal will ever come.
    if os.getppid() != parent_pid:
        os._exit(1)
