"""Network namespace facts for allow rules: a namespace's cookie and a device's ifindex inside it.

Both are read from inside the namespace by a short-lived thread that joins it with setns(2)
(setns moves only the calling thread, so the daemon itself stays where it is)."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from ext_authz.egress.kernel import EgressUnavailable

SO_NETNS_COOKIE = 71  # include/uapi/asm-generic/socket.h, Linux >= 5.14
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _in_netns(path: str | None, fn: Callable[[], T]) -> T:
    if path is None:
        return fn()
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            error.append(EgressUnavailable(f"network namespace {path}: {e}"))
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                error.append(EgressUnavailable(f"setns({path}): {os.strerror(err)}"))
                return
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            error.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name="sealgate-netns")  # the thread (and its netns) ends with run()
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def _cookie_here() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError as e:
            raise EgressUnavailable(f"SO_NETNS_COOKIE unsupported ({e}): allow rules need Linux >= 5.14") from e
    return int.from_bytes(raw, "little")


def netns_cookie(path: str | None) -> int:
    """The kernel's cookie of the namespace at `path` (None: the caller's own)."""
    return _in_netns(path, _cookie_here)


def ifindex_in(device: str, path: str | None) -> int:
    def lookup() -> int:
        try:
            return socket.if_nametoindex(device)
        except OSError as e:
            where = path or "the daemon's network namespace"
            raise EgressUnavailable(f"allow rule device {device!r}: no such interface in {where}") from e

    return _in_netns(path, lookup)
