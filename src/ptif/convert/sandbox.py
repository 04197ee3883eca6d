"""Run a decoder in a child process that cannot outlive, outgrow or outlast its conversion.

Decoders that run programs (Ghostscript runs the PostScript of an EPS) or whose memory cannot be
bounded from inside the worker (PDFium, Pillow) decode in a child started by :func:`run`:

- **Its own empty folder.** A fresh private scratch folder (mode 0700, removed afterwards) is
  its working folder, ``TMPDIR``, ``TEMP``, ``TMP`` and ``HOME``. Its environment is only that,
  ``PATH`` and the C locale: nothing of the worker's (``GS_OPTIONS``, credentials, ``PTIF_*``).
- **The source on standard input**, opened read-only by the parent: the child is given no path
  to it, nor to the work folder where other images wait.
- **Limits** set by the child on itself before it runs the decoder: address space
  (``RLIMIT_AS``) at the conversion's memory budget, CPU time (``RLIMIT_CPU``) at its time
  budget, files it writes no larger than the memory budget, no core dumps, no new privileges.
  The parent adds a wall-clock deadline of the same time budget, and a bound on its scratch
  folder as a whole: what the folder's files (and the deleted files the child keeps open there)
  take on disk is sampled with its memory, and the child is killed once that passes the memory
  budget, or the folder holds more than :data:`MAX_SCRATCH_FILES` files.
- **It dies with the worker.** ``PR_SET_PDEATHSIG(SIGKILL)``: the kernel kills it when the
  thread that started it ends, which for ptif is when the worker process ends, however it ends
  (SIGKILL, or SIGTERM and the grace period). The death signal follows the *thread*, not the
  process, so a caller must start children from a thread that outlives them: :func:`run` blocks
  until its child is gone, and the worker's conversion threads live for the whole run. The child
  checks its parent is still there after arming the signal, so a worker that dies while it
  starts leaves nothing. It runs in its own process group, killed as a whole when the parent
  stops waiting (deadline, bad output, error), so nothing it started survives either.

- **A supervisor between them.** The child is a supervisor: undumpable, a subreaper, it forks
  the decoder, waits for it, then kills every process left (``setsid`` ones included) and exits
  as the decoder did; a SIGTERM from the worker makes it do so at once. When the worker is
  root, the decoder drops to a user of its own (:data:`DECODER_IDS`) with no groups, a process
  limit and (where the kernel lets root) a network namespace of its own; the worker itself is
  made undumpable.

The child is a small Python launcher (``python -I -m ptif.convert.sandbox``, spawned, not forked
from the threaded worker into Python code) that sets its limits, then either ``exec``s the
decoder program (Ghostscript) or calls a decoder function of :mod:`ptif.convert` in the same
process (the Pillow and PDFium rasterisers, which import neither pyvips nor the worker).

What goes wrong becomes one error, never a traceback and never the worker going down: past the
time budget (deadline or CPU limit), :class:`~ptif.errors.TooSlowError`; out of memory (the
decoder says so, or crashes after growing close to the limit), :class:`~ptif.errors.TooLargeError`;
any other failure or signal, :class:`~ptif.errors.UndecodableError` with the decoder's reason.
"""

from __future__ import annotations

import os
import sys
import threading
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without loading typing on every run
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path
    from typing import BinaryIO, TypeVar

    from ptif.errors import PtifError

    T = TypeVar("T")

__all__ = ["Budget", "ChildClosed", "ChildOutput", "OutputTooLarge", "run", "too_large"]

#: Each process keeps its decoders' scratch folders in one folder of the temporary folder,
#: named so, holding a lock file that the process keeps locked (``flock``) while it lives.
SCRATCH_PREFIX = "ptif-decoders-"
SCRATCH_LOCK = ".in-use"
#: A folder without its lock file (its process died while making it) is left alone this long.
UNLOCKED_GRACE_S = 86400.0
#: How much of a decoder's standard error is kept for its failure message.
STDERR_TAIL = 16384
#: A decoder that crashed after its address space grew past this share of the limit ran out
#: of memory (PDFium aborts when an allocation fails; nothing else tells the two apart).
OUT_OF_MEMORY_SHARE = 0.75
#: How often the parent samples the child's peak address space and its scratch folder.
SAMPLE_SECONDS = 0.1
#: Files a decoder may leave in its scratch folder at once (Ghostscript keeps a few band
#: files); more fills the file system's inodes, whatever their size.
MAX_SCRATCH_FILES = 10_000
#: CPU seconds a decoder gets past its limit (SIGXCPU) before the kernel's SIGKILL.
CPU_GRACE_S = 2
#: What decoders say when an allocation fails (Ghostscript, Python, C++, libc).
OUT_OF_MEMORY_WORDS = ("vmerror", "out of memory", "memoryerror", "bad_alloc", "cannot allocate")
#: What a decoder child may call in-process (``call`` mode): ptif's own rasterisers only.
_CALLABLE_PREFIX = "ptif.convert."
#: Linux prctl options.
_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_NO_NEW_PRIVS = 38
_SIGKILL = 9
_SIGTERM = 15
_CLONE_NEWNET = 0x40000000
#: Exit status of a child whose parent died before it could arm its death signal.
_ORPHANED = 125
#: Exit status of a decoder that could not be confined (it never ran).
_NOT_CONFINED = 126
#: Who a decoder runs as when the worker runs as root (containers usually do): a user and group
#: of its own, drawn afresh for each decoder from :data:`DECODER_IDS` (ids no account has), with
#: no supplementary groups. It cannot read the work folders, the stores' folders or the
#: credentials, which are root's and private; nor reach another decoder at all: not its
#: ``/proc/PID/fd`` (another upload's bytes), not its folder, not a signal or a trace.
DECODER_IDS = range(0x4000_0000, 0x7FFF_0000)
#: Where a user namespace maps too few ids for that (rootless containers): ``nobody``, shared.
DECODER_UID = 65534
DECODER_GID = 65534
#: Processes the decoder's user may have at once, once it is not root: decoders start none
#: (Ghostscript, PDFium and Pillow run in one process); this bounds a fork bomb.
DECODER_NPROC = 32
#: Seconds the worker gives the supervisor to kill the decoder's processes before it kills it.
STOP_GRACE_S = 5.0


class Budget:
    """What a decoder child may use, and whose file it decodes (for messages)."""

    __slots__ = ("decoder", "label", "max_memory", "max_seconds", "title")

    def __init__(
        self, label: str, title: str, decoder: str, max_memory: int, max_seconds: float
    ) -> None:
        self.label = label
        self.title = title
        self.decoder = decoder
        self.max_memory = max_memory
        self.max_seconds = max_seconds


class ChildClosed(Exception):
    """The child's output ended before the reader had what it needed."""


class _Expired(Exception):
    """The wall-clock deadline passed."""


class _ScratchFull(Exception):
    """The child's scratch folder grew past its bound."""


class OutputTooLarge(Exception):
    """The child wrote more output than the reader may keep; it is killed at once."""


class ChildOutput:
    """The child's standard output as a reader sees it, read within the deadline while its
    standard error is collected (a tail of it) and its peak address space sampled."""

    def __init__(
        self, process: subprocess.Popen[bytes], deadline: float, scratch: Path, disk_limit: int
    ) -> None:
        import selectors

        assert process.stdout is not None and process.stderr is not None
        self._process = process
        self._deadline = deadline
        self._out = process.stdout.fileno()
        self._err = process.stderr.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._out, selectors.EVENT_READ)
        self._selector.register(self._err, selectors.EVENT_READ)
        self._pending = bytearray()
        self._out_open = True
        self._err_open = True
        self._sampled = 0.0
        self._scratch = scratch
        self._disk_limit = disk_limit
        self.stderr = bytearray()
        self.peak_memory = 0
        self.peak_disk = 0

    def read_line(self, limit: int = 4096) -> bytes:
        """One line (without its newline) of at most ``limit`` bytes."""
        while (end := self._pending.find(b"\n")) < 0:
            if len(self._pending) > limit or not self._fetch():
                raise ChildClosed
        line = bytes(self._pending[:end])
        del self._pending[: end + 1]
        return line

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` entirely, straight from the pipe (large rasters are not copied)."""
        filled = min(len(self._pending), len(view))
        view[:filled] = self._pending[:filled]
        del self._pending[:filled]
        while filled < len(view):
            self._wait_for_output()
            count = os.readv(self._out, [view[filled:]])
            if count == 0:
                self._out_open = False
                raise ChildClosed
            filled += count

    def read_to_end(self, limit: int) -> bytes:
        """Everything until the child closes its output; :class:`OutputTooLarge` as soon as it
        passes ``limit`` bytes (the child is then killed at once, not drained)."""
        while self._fetch():
            if len(self._pending) > limit:
                raise OutputTooLarge
        data = bytes(self._pending)
        self._pending.clear()
        return data

    def copy_to(self, file: BinaryIO, limit: int) -> int:
        """Write everything until the child closes its output to ``file``, and say how much;
        :class:`OutputTooLarge` as soon as it passes ``limit`` bytes (the child is then killed
        at once, not drained)."""
        written = 0
        while self._pending or self._fetch():
            written += len(self._pending)
            if written > limit:
                raise OutputTooLarge
            file.write(self._pending)
            self._pending.clear()
        return written

    def _fetch(self) -> bool:
        """Append what the child wrote next to the pending bytes; False at its end."""
        if not self._out_open:
            return False
        self._wait_for_output()
        data = os.read(self._out, 1 << 16)
        if not data:
            self._out_open = False
            return False
        self._pending += data
        return True

    def _wait_for_output(self) -> None:
        while not self._poll(want_output=True):
            pass

    def finish(self) -> None:
        """Read standard error to its end (the child is exiting), within the deadline."""
        while self._err_open:
            self._poll(want_output=False)

    def _poll(self, *, want_output: bool) -> bool:
        """Wait for the pipes once; True when standard output has bytes (or its end)."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise _Expired
        events = self._selector.select(min(remaining, SAMPLE_SECONDS))
        self._sample_memory()
        ready = False
        for key, _ in events:
            if key.fd == self._err:
                self._read_stderr()
            elif want_output:
                ready = True
            else:  # finishing: output the reader did not want is dropped
                self._drop_output()
        return ready

    def _read_stderr(self) -> None:
        data = os.read(self._err, 1 << 16)
        if not data:
            self._err_open = False
            self._selector.unregister(self._err)
            return
        self.stderr += data
        del self.stderr[:-STDERR_TAIL]

    def _drop_output(self) -> None:
        if not os.read(self._out, 1 << 16):
            self._out_open = False
            self._selector.unregister(self._out)

    def _sample_memory(self) -> None:
        now = time.monotonic()
        if now - self._sampled < SAMPLE_SECONDS:
            return
        self._sampled = now
        pids = (self._process.pid, *_children(self._process.pid))  # the supervisor, the decoder
        for pid in pids:
            self.peak_memory = max(self.peak_memory, _peak_address_space(pid))
        disk = scratch_usage(self._scratch, pids)
        self.peak_disk = max(self.peak_disk, disk)
        if disk > self._disk_limit:
            raise _ScratchFull

    def close(self) -> None:
        self._selector.close()


def scratch_usage(scratch: Path, pids: tuple[int, ...]) -> int:
    """What the files of ``scratch`` take on disk, with the files there that the processes
    ``pids`` deleted but keep open; more than any bound once it holds :data:`MAX_SCRATCH_FILES`."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for folder, _, names in os.walk(scratch):
        for name in names:
            total += _disk_use(os.path.join(folder, name), seen, follow=False)
            if len(seen) > MAX_SCRATCH_FILES:
                return 2**63
    inside = os.path.join(str(scratch), "")
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            link = f"/proc/{pid}/fd/{descriptor}"
            try:
                opened = os.readlink(link).startswith(inside)
            except OSError:
                continue
            if opened:
                total += _disk_use(link, seen, follow=True)
    return total


def _disk_use(path: str, seen: set[tuple[int, int]], *, follow: bool) -> int:
    """The blocks of one file, once per file (by device and inode)."""
    try:
        status = os.stat(path, follow_symlinks=follow)
    except OSError:  # gone meanwhile
        return 0
    key = (status.st_dev, status.st_ino)
    if key in seen:
        return 0
    seen.add(key)
    return int(status.st_blocks) * 512


def _children(pid: int) -> list[int]:
    """The children of ``pid`` (of its main thread, which is all a launcher has)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as listing:
            return [int(child) for child in listing.read().split()]
    except (OSError, ValueError):
        return []


def _peak_address_space(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run(
    command: list[str],
    source: Path,
    budget: Budget,
    read: Callable[[ChildOutput], T],
    *,
    call: bool = False,
) -> T:
    """Run ``command`` confined, with ``source`` on its standard input; ``read`` turns its
    standard output into the result. With ``call``, ``command`` is ``["ptif.convert.module:
    function", *arguments]``, called in the child's Python instead of ``exec``.

    ``read`` may raise a :class:`~ptif.errors.PtifError` (the child reported one), or
    :class:`ChildClosed` (the output ended early: the child's exit status then says why).
    """
    import shutil
    import tempfile
    from pathlib import Path

    if call and not _callable(command[0]):
        raise ValueError(f"{command[0]!r} is not a ptif decoder function")
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=_scratch_root()))
    try:
        process = _start(command, source, scratch, budget, call)
        return _supervise(process, budget, read, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_ROOTS: dict[str, Path] = {}
_ROOTS_LOCK = threading.Lock()


def _scratch_root() -> Path:
    """This process's folder of scratch folders under the temporary folder, made and locked on
    first use; the folders of processes that died (their lock is free) are removed first."""
    import fcntl
    import tempfile
    from pathlib import Path

    parent = tempfile.gettempdir()
    with _ROOTS_LOCK:
        root = _ROOTS.get(parent)
        if root is not None and root.is_dir():
            return root
        sweep(Path(parent))
        root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
        descriptor = os.open(root / SCRATCH_LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # held, descriptor open, until the process ends
        _ROOTS[parent] = root
        if len(_ROOTS) == 1:
            import atexit

            atexit.register(_remove_roots)
        return root


def _remove_roots() -> None:
    """At a normal exit; after a kill, the next process's :func:`sweep` does it."""
    import shutil

    for root in _ROOTS.values():
        shutil.rmtree(root, ignore_errors=True)


def sweep(parent: Path) -> list[Path]:
    """Remove the decoder folders under ``parent`` that no live process holds: those a killed
    worker left behind, with whatever its decoders had written."""
    import shutil

    removed = []
    for folder in parent.glob(f"{SCRATCH_PREFIX}*"):
        try:
            if folder.is_dir() and not folder.is_symlink() and _abandoned(folder):
                shutil.rmtree(folder)
                removed.append(folder)
        except OSError:
            continue
    return removed


def _abandoned(folder: Path) -> bool:
    import fcntl

    try:
        descriptor = os.open(folder / SCRATCH_LOCK, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_S
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True


def _start(
    command: list[str], source: Path, scratch: Path, budget: Budget, call: bool
) -> subprocess.Popen[bytes]:
    import subprocess

    from ptif.errors import IO_ERROR, ConversionError, SourceMissingError, UndecodableError

    _protect_worker()
    user = _decoder_user(scratch)
    launcher = [
        sys.executable, "-I", "-m", __name__, str(budget.max_memory),
        str(max(1, round(budget.max_seconds))), str(os.getpid()), user,
        "call" if call else "exec", *command,
    ]  # fmt: skip
    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceMissingError(f"{budget.label}: no such file") from None
    except OSError as error:
        reason = f"{budget.label}: cannot read it ({error.strerror})"
        raise ConversionError(reason, code=IO_ERROR) from error
    try:
        return subprocess.Popen(
            launcher,
            stdin=descriptor,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=scratch,
            env=_environment(scratch, dropped=user != "-"),
            process_group=0,
            close_fds=True,
        )
    except OSError as error:
        raise UndecodableError(
            f"{budget.label}: could not start {budget.decoder} ({error.strerror})"
        ) from error
    finally:
        os.close(descriptor)


_PROTECTED = False


def _protect_worker() -> None:
    """Make this process undumpable (once): a decoder running as the same user can then neither
    trace it nor read its ``/proc/PID/mem`` or ``environ``, where credentials may be."""
    global _PROTECTED
    if not _PROTECTED:
        _prctl(_PR_SET_DUMPABLE, 0)
        _PROTECTED = True


def _decoder_user(scratch: Path) -> str:
    """``UID:GID`` the decoder drops to (root only: the scratch folder is given to it, and its
    parent opened to it for traversal alone), or ``-`` to stay the worker's user. A fresh id
    for each decoder (one in a billion of meeting another's); ``nobody`` where the user
    namespace has no such id."""
    if os.geteuid() != 0:
        return "-"
    import secrets

    os.chmod(scratch.parent, 0o711)  # not listable: the others' names stay hidden
    uid = gid = DECODER_IDS[secrets.randbelow(len(DECODER_IDS))]
    try:
        os.chown(scratch, uid, gid)
    except OSError:  # EINVAL: not mapped in this user namespace
        uid, gid = DECODER_UID, DECODER_GID
        os.chown(scratch, uid, gid)
    return f"{uid}:{gid}"


def _environment(scratch: Path, *, dropped: bool) -> dict[str, str]:
    # A decoder that left root may be unable to reach its folder by name (a private TMPDIR on
    # the way): it is its working folder, and named by a relative path then.
    folder = "." if dropped else str(scratch)
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C"}
    env.update(TMPDIR=folder, TEMP=folder, TMP=folder, HOME=folder)
    return env


def _supervise(
    process: subprocess.Popen[bytes],
    budget: Budget,
    read: Callable[[ChildOutput], T],
    scratch: Path,
) -> T:
    deadline = time.monotonic() + budget.max_seconds
    output = ChildOutput(process, deadline, scratch, budget.max_memory)
    try:
        try:
            result = read(output)
            closed = False
        except ChildClosed:
            closed = True
        output.finish()
        status = _wait(process, deadline)
        if closed or status != 0:
            raise _failure(budget, status, output)
        return result
    except _Expired:
        elapsed = time.monotonic() - deadline + budget.max_seconds
        raise _too_slow(budget, "did not finish within", elapsed) from None
    except _ScratchFull:
        raise too_large(budget, what="wrote more to its scratch folder than") from None
    except OutputTooLarge:
        raise too_large(budget, what="drew more than") from None
    finally:
        _kill_group(process)
        output.close()
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def _wait(process: subprocess.Popen[bytes], deadline: float) -> int:
    import subprocess

    try:
        return process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise _Expired from None


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Have the supervisor kill every process the decoder started (SIGTERM: it kills its
    descendants, those that left the process group included, and exits), then kill the
    process group and reap the supervisor."""
    import contextlib
    import subprocess

    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(process.pid, _SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, _SIGKILL)
    process.wait()


def _failure(budget: Budget, status: int, output: ChildOutput) -> PtifError:
    from ptif.errors import UndecodableError

    text = output.stderr.decode(errors="replace")
    signal_name = _signal_name(-status) if status < 0 else None
    if signal_name == "SIGXCPU":
        return _too_slow(budget, "used more CPU time than")
    if any(word in text.lower() for word in OUT_OF_MEMORY_WORDS) or (
        signal_name and output.peak_memory >= OUT_OF_MEMORY_SHARE * budget.max_memory
    ):
        return too_large(budget)
    reason = _reason(text, status, signal_name)
    return UndecodableError(
        f"{budget.label}: not a readable {budget.title} file ({budget.decoder}: {reason})"
    )


def _reason(text: str, status: int, signal_name: str | None) -> str:
    from ptif.console import printable

    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = next((line for line in lines if "Error:" in line), lines[-1] if lines else "")
    # The decoder's words are the file's (a PostScript program prints what it likes): no
    # control characters reach the operator's terminal, the log or the failure record.
    said = printable(said[:300])
    if signal_name:
        return f"{said}; killed by {signal_name}" if said else f"crashed ({signal_name})"
    if status == 0:
        return said or "its output ended early"
    return said or f"failed with exit status {status}"


def _signal_name(number: int) -> str:
    import signal

    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def too_large(
    budget: Budget, need: int | None = None, what: str = "needs more memory than"
) -> PtifError:
    """The memory error of a decoder; ``need`` if it said how much it wanted, ``what`` it did
    (the scratch folder and the output are bounded by the memory budget too)."""
    from ptif.convert.limits import format_size
    from ptif.errors import TooLargeError

    wanted = f" (it needs {format_size(need)})" if need else ""
    stopped = "" if what == "needs more memory than" else " and was stopped"
    return TooLargeError(
        f"{budget.label}: {budget.decoder} {what} the limit of "
        f"{format_size(budget.max_memory)} per conversion{wanted}{stopped}; if the image is "
        "genuine, raise the limit with --max-memory or PTIF_MAX_MEMORY"
    )


def _too_slow(budget: Budget, what: str, elapsed: float | None = None) -> PtifError:
    from ptif.errors import TooSlowError

    after = f" after {elapsed:.1f} s" if elapsed is not None else ""
    return TooSlowError(
        f"{budget.label}: {budget.decoder} {what} the time limit of {budget.max_seconds:g} s "
        f"and was stopped{after}; if the image is genuine, raise the limit with --max-seconds "
        "or PTIF_MAX_SECONDS"
    )


# the child -------------------------------------------------------------------------------------


def _callable(target: str) -> bool:
    module, _, function = target.partition(":")
    return module.startswith(_CALLABLE_PREFIX) and function.isidentifier()


def _guard(parent: int) -> None:
    """In the supervisor: die with the worker, adopt every orphan the decoder leaves."""
    import resource

    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(_ORPHANED)
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _confine(max_memory: int, max_seconds: int, parent: int, user: str) -> None:
    """In the decoder, before it runs: die with its supervisor, leave root (and the network,
    where the kernel allows) if the worker is root, and set the limits."""
    import resource

    if user != "-":
        _unshare_network()
        uid, gid = (int(part) for part in user.split(":"))
        for pipe in (1, 2):  # Ghostscript reopens its output (/dev/stdout): give it the pipes
            os.fchown(pipe, uid, gid)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (DECODER_NPROC, DECODER_NPROC))
    _prctl(_PR_SET_PDEATHSIG, _SIGKILL)  # after the change of user, which disarms it
    if os.getppid() != parent:
        os._exit(_ORPHANED)
    _prctl(_PR_SET_DUMPABLE, 0)
    resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
    resource.setrlimit(resource.RLIMIT_CPU, (max_seconds, max_seconds + CPU_GRACE_S))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_memory, max_memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _unshare_network() -> None:
    """A network namespace of its own (only a loopback, down), where the kernel lets root make
    one (containers without CAP_SYS_ADMIN do not): nothing to lose if not."""
    import ctypes

    unshare = getattr(ctypes.CDLL(None, use_errno=True), "unshare", None)
    if unshare is not None:
        unshare(_CLONE_NEWNET)


def _supervise_decoder(decoder: int) -> int:
    """In the supervisor: wait for the decoder, then kill and reap every process left (a
    subreaper adopts the decoder's orphans, ``setsid`` ones included); exit as it did. A
    SIGTERM from the worker ends the wait early."""
    import signal

    def stop(number: int, frame: object) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, stop)
    try:
        status = os.waitpid(decoder, 0)[1]
    except _Stopped:
        status = _SIGKILL  # as waitpid says of a process killed by SIGKILL
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _kill_descendants()
    return status


class _Stopped(Exception):
    """The worker asked the supervisor to stop."""


def _kill_descendants() -> None:
    """Kill every child until none is left: a killed child's own children come to this
    process (it is their subreaper) and are killed in turn."""
    import contextlib

    while True:
        for child in _children(os.getpid()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, _SIGKILL)
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _exit_as(status: int) -> None:
    """End this process as the decoder ended: the same exit code, or the same signal."""
    import signal

    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def _prctl(option: int, value: int) -> None:
    import ctypes

    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is None:  # not Linux: no death signal; the parent still kills the group
        return
    if prctl(option, value, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl({option}): {os.strerror(error)}")


def main(argv: list[str]) -> int:
    """``MAX_MEMORY MAX_SECONDS PARENT_PID USER exec PROGRAM ARGS...`` or ``... call
    MODULE:FUNCTION ARGS...``: become the supervisor of a decoder child that confines itself
    (as ``USER``, ``UID:GID`` or ``-``), then becomes the program or calls the function."""
    memory, seconds, parent, user, mode, target, *arguments = argv
    _guard(int(parent))
    if mode == "call" and _callable(target):  # imported while the files are readable
        import importlib

        module = importlib.import_module(target.partition(":")[0])
        if hasattr(module, "prepare"):
            module.prepare(arguments)
    supervisor = os.getpid()
    decoder = os.fork()
    if decoder == 0:
        _decode(int(memory), int(seconds), supervisor, user, mode, target, arguments)
    os.close(0)  # the decoder's: the worker's reading ends when the decoder's writing does
    os.close(1)
    _exit_as(_supervise_decoder(decoder))
    return 1


def _decode(
    memory: int, seconds: int, supervisor: int, user: str, mode: str, target: str, args: list[str]
) -> None:
    try:
        _confine(memory, seconds, supervisor, user)
        if mode == "exec":
            os.execvp(target, [target, *args])
        if mode != "call" or not _callable(target):
            print(f"ptif sandbox: cannot run {target!r}", file=sys.stderr)
            os._exit(2)
        import importlib

        module, _, function = target.partition(":")
        result: int = getattr(importlib.import_module(module), function)(args)
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError as error:
        print(f"ptif sandbox: could not start the decoder ({error})", file=sys.stderr)
        os._exit(_NOT_CONFINED)
    except SystemExit as error:
        os._exit(error.code if isinstance(error.code, int) else 1)
    except BaseException:  # the decoder's own failure: its last words, as Python prints them
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(result)  # no interpreter teardown: PDFium's alone takes tens of milliseconds


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
