"""Reading the files a plan or a command names: under an allowed root, bounded, never blocking.

Plan files name other files (includes, script files, credential and TSIG key files), and a
plan may come from someone less trusted than the process that reads it. Every such file is
therefore:

- resolved (symbolic links followed) and required to lie under an allowed root: for includes
  and scripts the folder of the plan file, other folders only when configured
  (``FERRYMAN_PLAN_ROOTS``); for secrets the folders an administrator keeps them in
  (:func:`secret_roots`), others only when configured (``FERRYMAN_SECRET_ROOTS``);
- opened without blocking (a FIFO cannot hang the reader) and required to be a regular file
  (``/dev/zero``, FIFOs, sockets and devices are refused);
- read with a size limit and a deadline, never into unbounded memory.

Errors name the file and what to fix, never its content.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from plans.errors import ConfigurationError

MAX_TEXT_BYTES = 1024 * 1024  # plan files, includes and scripts
MAX_SECRET_BYTES = 64 * 1024  # passwords and TSIG key files
READ_TIMEOUT = 5.0  # seconds to read one file; a regular file on a healthy disk takes ms

PLAN_ROOTS_VARIABLE = "FERRYMAN_PLAN_ROOTS"
SECRET_ROOTS_VARIABLE = "FERRYMAN_SECRET_ROOTS"
# Secret folders of a system install and of container runtimes (Docker, Compose, Kubernetes);
# a user install adds $XDG_CONFIG_HOME/ferryman (see default_secret_roots).
SYSTEM_SECRET_ROOTS = ("/etc/ferryman", "/run/secrets")

# Kernel pseudo-filesystems: their "regular" files are views of process memory, environment
# and devices, never secrets an operator stored.
PSEUDO_ROOTS = ("/proc", "/sys", "/dev")

_CHUNK = 64 * 1024


class FileRefused(ConfigurationError):
    """A named file is outside the allowed roots, not a regular file, too large or unreadable."""


class FileTooLarge(FileRefused):
    """A named file is larger than the limit for its kind."""


def configured_roots(variable: str) -> list[str]:
    """The folders listed in ``variable`` (separated by ``os.pathsep``), resolved."""
    raw = os.environ.get(variable, "")
    return [os.path.realpath(part) for part in raw.split(os.pathsep) if part.strip()]


def default_secret_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where secrets may be read from when ``FERRYMAN_SECRET_ROOTS`` is not set.

    The folders an administrator keeps secrets in, and that only they (or the secret's owner)
    can write: ``/etc/ferryman`` for a system install, ``/run/secrets`` where Docker, Compose
    and Kubernetes mount secrets, and ``$XDG_CONFIG_HOME/ferryman`` (``~/.config/ferryman``)
    for a user install. A plan's own folder is not one: plans are shared and versioned,
    secrets must not be, and the workers that read a secret have no plan folder.
    """
    env = os.environ if environ is None else environ
    roots = list(SYSTEM_SECRET_ROOTS)
    config = env.get("XDG_CONFIG_HOME", "").strip()
    if not config or not os.path.isabs(config):  # the XDG rule: a relative value is ignored
        home = env.get("HOME", "").strip() or os.path.expanduser("~")
        config = os.path.join(home, ".config") if os.path.isabs(home) else ""
    if config:
        roots.append(os.path.join(config, "ferryman"))
    return [os.path.realpath(root) for root in roots]


def secret_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """The folders secret files (credentials, TSIG keys) may be read from, resolved.

    ``FERRYMAN_SECRET_ROOTS`` lists them when it is set, replacing
    :func:`default_secret_roots`; systemd's ``$CREDENTIALS_DIRECTORY`` is always one when it
    is set, since systemd makes it for this service alone.
    """
    env = os.environ if environ is None else environ
    raw = env.get(SECRET_ROOTS_VARIABLE, "")
    roots = [os.path.realpath(part) for part in raw.split(os.pathsep) if part.strip()]
    if not roots:
        roots = default_secret_roots(env)
    credentials = env.get("CREDENTIALS_DIRECTORY", "").strip()
    if credentials:
        roots.insert(0, os.path.realpath(credentials))
    return list(dict.fromkeys(roots))


def within(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` (already resolved) lies inside one of ``roots`` (resolved)."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def resolve_under(path: str | Path, roots: Sequence[str], *, what: str, hint: str) -> str:
    """``path`` resolved, refused unless it lies under one of ``roots``.

    ``hint`` says how to allow another folder; ``what`` names the file in the message.
    """
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):
        raise FileRefused(f"{what} {str(path)!r} is not a usable file name") from None
    if not within(real, roots):
        shown = ", ".join(roots) or "none"
        raise FileRefused(
            f"{what} {str(path)!r} is outside the allowed folders ({shown}); move it there "
            f"or {hint}"
        )
    return real


def resolve_secret(path: str | Path, *, what: str = "secret file") -> str:
    """A secret file's resolved path (symbolic links followed), refused outside
    :func:`secret_roots` and in the kernel's pseudo-filesystems whatever the roots say."""
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):
        raise FileRefused(f"{what} {str(path)!r} is not a usable file name") from None
    if within(real, PSEUDO_ROOTS):
        raise FileRefused(
            f"{what} {str(path)!r} is in a kernel pseudo-filesystem "
            f"({', '.join(PSEUDO_ROOTS)}), not a stored secret; point at a regular file"
        )
    roots = secret_roots()
    if not within(real, roots):
        shown = repr(str(path))
        if real != os.path.abspath(path):  # a link: say where it leads
            shown += f" (a link to {real!r})"
        raise FileRefused(
            f"{what} {shown} is outside the allowed secret folders ({', '.join(roots)}); move it "
            f"into one, or set {SECRET_ROOTS_VARIABLE} to the folders to allow (separated by "
            f"'{os.pathsep}')"
        )
    return real


def read_bounded(
    path: str | Path, *, limit: int, what: str = "file", timeout: float = READ_TIMEOUT
) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them, within ``timeout``.

    Opened with ``O_NONBLOCK`` so that opening a FIFO returns at once (it is then refused as
    not a regular file); the size is checked from the open file, and the read stops one byte
    past the limit whatever ``stat`` said (files grow, and ``/proc`` reports 0).
    """
    name = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(name, flags)
    except (ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or "not a usable file name"
        raise FileRefused(f"cannot read {what} {name!r} ({reason})") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileRefused(f"{what} {name!r} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(
                f"{what} {name!r} is not a regular file (a device, FIFO or socket); "
                "name a regular file"
            )
        if info.st_size > limit:
            raise FileTooLarge(f"{what} {name!r} is larger than {_size(limit)}, its limit")
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, min(_CHUNK, limit + 1 - total))
            except BlockingIOError:
                chunk = None
            except OSError as exc:
                raise FileRefused(f"cannot read {what} {name!r} ({exc.strerror})") from None
            if chunk == b"":
                break
            if chunk:
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise FileTooLarge(f"{what} {name!r} is larger than {_size(limit)}, its limit")
            if time.monotonic() > deadline:
                raise FileRefused(
                    f"reading {what} {name!r} took longer than {timeout:g} s; check the disk "
                    "or network share it is on"
                )
            if chunk is None:
                time.sleep(0.01)
        return b"".join(chunks)
    finally:
        os.close(fd)


def check_regular(path: str | Path, *, limit: int, what: str = "file") -> None:
    """Refuse ``path`` unless it is an existing regular file within ``limit`` (no read)."""
    name = str(path)
    try:
        info = os.stat(name)
    except FileNotFoundError:
        raise FileRefused(f"{what} {name!r} not found") from None
    except (ValueError, OSError) as exc:
        reason = getattr(exc, "strerror", None) or "not a usable file name"
        raise FileRefused(f"cannot read {what} {name!r} ({reason})") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileRefused(f"{what} {name!r} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused(
            f"{what} {name!r} is not a regular file (a device, FIFO or socket); name a regular file"
        )
    if info.st_size > limit:
        raise FileTooLarge(f"{what} {name!r} is larger than {_size(limit)}, its limit")


def _size(limit: int) -> str:
    if limit % (1024 * 1024) == 0:
        return f"{limit // (1024 * 1024)} MiB"
    if limit % 1024 == 0:
        return f"{limit // 1024} KiB"
    return f"{limit} bytes"


def script_file_problem(path: str, roots: Sequence[str]) -> str | None:
    """Why the script file ``path`` cannot be used (outside ``roots``, not regular, too large)."""
    try:
        resolve_under(
            path,
            [os.path.realpath(root) for root in roots],
            what="script file",
            hint=f"add its folder to {PLAN_ROOTS_VARIABLE}",
        )
        check_regular(path, limit=MAX_TEXT_BYTES, what="script file")
    except FileRefused as exc:
        return str(exc)
    return None
