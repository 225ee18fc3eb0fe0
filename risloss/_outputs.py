"""Output folders that a run owns: claimed, locked, and replaced only once the new run is done.

A run writes into its output folder ``OUT`` through a claim (:func:`claim_output`), which
guarantees three things:

- **Owned.** ``OUT`` must be new, empty, or hold a run: a ``.risloss-run.json`` manifest (the
  kind of run, its command, the files it wrote), or, from versions that wrote no manifest, a
  ``checkpoint.pt`` or ``metrics.json`` beside the files such runs write (:data:`RUN_FILES`).
  Any other content (a ``student.pt`` with no run marker, a ``synthetic/mine/f``) is refused
  unless ``overwrite``. No file that a run did not write is ever removed, ``overwrite``
  included: the new run's files replace the files of the same name, the earlier run's other
  files go, and everything else stays.
- **Locked.** While a claim is held, another claim of ``OUT`` is refused at once, naming the
  process that holds it. The lock is an ``flock`` on ``OUT/.risloss-run/lock``, which the
  kernel releases when its process ends however it ends, so a lock left by a killed run is
  simply taken over.
- **Replaced atomically.** With ``overwrite`` the new run writes into a staging folder,
  ``OUT/.risloss-run/staging``; the earlier run's files stay in place until :meth:`commit`
  (called on leaving the ``with`` block without an error). The commit sets the earlier files
  aside, moves the new ones in, writes the manifest and only then removes the set-aside files;
  a failure puts everything back. A journal makes this hold even if the process is killed
  while committing: the next claim (or :func:`recover_output`) completes or undoes it. A run
  that stops before its commit leaves the earlier run as it was, and
  :attr:`OutputFolder.outcome` says so in one line.

Without ``overwrite`` (a new or empty folder, or ``resume`` of the run in it) the run writes
straight into ``OUT``, as before: ``OUT/checkpoint.pt`` is where an interrupted run continues.
A folder left empty by a run that failed before writing anything is put back as it was (the
manifest, the lock and a folder the claim created are removed).

``resume`` continues the run in ``OUT``; when ``OUT`` holds an unfinished ``overwrite`` run
(its staging folder has files), ``resume`` continues that one, in the staging folder, and its
commit then replaces the earlier run as ``overwrite`` would have.

Layout: ``OUT/.risloss-run.json`` (the manifest) and, while a run is in progress,
``OUT/.risloss-run/`` holding ``lock``, ``staging/`` with ``staging.json`` (an ``overwrite``
run's files and manifest), ``old/`` and ``commit.json`` (during a commit). A finished run
leaves its files and the manifest only.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from risloss._outputs import claim_output
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> with claim_output(out, "quantize") as folder:
    ...     _ = folder.path_for("student.pt").write_text("weights")
    >>> sorted(p.name for p in out.iterdir())
    ['.risloss-run.json', 'student.pt']
    >>> with claim_output(out, "quantize", overwrite=True) as folder:
    ...     _ = folder.path_for("student.pt").write_text("new weights")
    ...     (out / "student.pt").read_text()  # the earlier run stays until the commit
    'weights'
    >>> (out / "student.pt").read_text()
    'new weights'
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = [
    "FORMAT",
    "MANIFEST",
    "RUN_FILES",
    "RUN_MARKERS",
    "WORK_FOLDER",
    "OutputCommitError",
    "OutputFolder",
    "OutputFolderError",
    "OutputInUseError",
    "claim_output",
    "recover_output",
]

MANIFEST = ".risloss-run.json"
"""The manifest a run writes in its output folder: what marks the folder as a run's."""
WORK_FOLDER = ".risloss-run"
"""The claim's own folder inside the output folder: the lock, the staging folder, a commit."""
FORMAT = 1
"""The manifest's format version."""
RUN_MARKERS = ("checkpoint.pt", "metrics.json")
"""Files that mark a folder without a manifest as a run (written by earlier versions)."""
RUN_FILES = (
    "checkpoint.pt",
    "metrics.json",
    "student.pt",
    "generator.pt",
    "samples.png",
    "losses.png",
    "synthetic.pt",
    "synthetic/*/*.png",
    ".synthetic.tmp/*/*.png",
    ".synthetic.old/*/*.png",
)
"""The files a run may write (``*`` matches within one path part): in a folder without a
manifest, or of a run that did not finish, these (and their temporary files, ``.NAME.*.tmp``
and ``NAME.tmp``; the image folder's while it is replaced) count as the run's."""

_LOCK = "lock"
_STAGING = "staging"
_STAGING_MANIFEST = "staging.json"
_OLD = "old"
_JOURNAL = "commit.json"
_INTERNAL = frozenset({MANIFEST, WORK_FOLDER})
_SYSTEM_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_SHOWN = 3  # file names a message lists

_stage_hook: Callable[[str], None] | None = None
"""Called with the name of each step of a commit (tests use it to stop a commit midway)."""


class OutputFolderError(ValueError):
    """An output folder that a run may not use as asked; the message is one line naming it
    and what to do.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from risloss._outputs import OutputFolderError, claim_output
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / "notes.txt").write_text("mine")
        >>> try:
        ...     claim_output(out, "quantize", label="--out o")
        ... except OutputFolderError as err:
        ...     print(err)  # doctest: +ELLIPSIS
        --out o holds files that no risloss run wrote (notes.txt): choose a new or empty ...
    """


class OutputInUseError(OutputFolderError):
    """The output folder is claimed by another run that is still going.

    Attributes:
        pid: the process that holds the folder (``None`` when it did not say).
    """

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


class OutputCommitError(OSError):
    """Moving a finished run's files into place failed; the earlier files were put back.

    The message is one line: what failed, and where the new run's files are.
    """


# Paths ---------------------------------------------------------------------------------------


def _glob(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regular expression for glob ``patterns`` over relative POSIX paths (``*`` and
    ``?`` stay within a path part); each top-level file name also matches its temporary
    files (``.NAME.*.tmp`` of an atomic save, ``NAME.tmp``)."""
    parts = []
    for pattern in patterns:
        body = re.escape(pattern).replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        parts.append(body)
        if "/" not in pattern:
            parts.append(rf"\.{body}\.[^/]*\.tmp")
            parts.append(rf"{body}\.tmp")
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)")


def _files(root: Path, *, top: bool = True) -> dict[str, tuple[int, int, int]]:
    """Every file below ``root`` (relative POSIX path -> inode, mtime, size); a symbolic link
    is one entry, not followed. At the top, the claim's own entries are skipped."""
    found: dict[str, tuple[int, int, int]] = {}
    if not root.is_dir():
        return found
    for folder, dirs, names in os.walk(root):
        here = Path(folder)
        if top and here == root:
            dirs[:] = [d for d in dirs if d not in _INTERNAL]
            names = [n for n in names if n not in _INTERNAL]
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            path = here / name
            try:
                st = path.lstat()
            except OSError:
                continue
            found[path.relative_to(root).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file, flushed, renamed)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(obj, indent=1) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _move(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def _prune(root: Path, folders: Iterable[str]) -> None:
    """Remove the folders ``root/f`` that are empty, deepest first (others are kept)."""
    for rel in sorted(set(folders), key=lambda f: f.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            (root / rel).rmdir()


def _parents(rel: str) -> list[str]:
    """``"a/b/c.png" -> ["a", "a/b"]``."""
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _step(name: str) -> None:
    if _stage_hook is not None:
        _stage_hook(name)


# The lock ------------------------------------------------------------------------------------


class _Lock:
    """An exclusive, non-blocking lock on ``work/lock`` that the kernel drops with its process.

    The file holds the owner's pid (for the message of a refused claim). Releasing removes the
    file while still holding it; a claim that locked a file that was meanwhile removed (its
    inode no longer at the path) tries again, so two processes never both hold the lock.
    """

    def __init__(self, work: Path) -> None:
        self.path = work / _LOCK
        self.fd: int | None = None

    def acquire(self, what: str, label: str) -> None:
        for _ in range(20):
            self.path.parent.mkdir(exist_ok=True)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a releasing owner
                continue
            if not _try_lock(fd):
                holder = _read_pid(fd)
                os.close(fd)
                who = f"process {holder}" if holder is not None else "another process"
                raise OutputInUseError(
                    f"{label} is in use by another run ({who}): wait for it to end, or "
                    f"choose another {what}",
                    holder,
                )
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # locked a file its owner removed on release: try the new one
                os.close(fd)
                continue
            with contextlib.suppress(OSError):  # the pid is for messages only
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps({"pid": os.getpid(), "since": time.time()}).encode())
            self.fd = fd
            return
        raise OutputFolderError(f"{label}: could not lock {self.path} (it keeps changing)")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)  # closing drops the lock
        self.fd = None
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only when nothing else is left in it


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, 1 << 20, os.SEEK_SET)  # lock a byte beyond the pid, which stays readable
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return False
            raise
        return True


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = json.loads(os.read(fd, 4096).decode()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


# What a folder holds -------------------------------------------------------------------------


class _Survey:
    """What an output folder holds, read under the lock.

    ``state``: ``"new"`` (no folder), ``"empty"``, ``"run"`` (a manifest), ``"legacy"`` (a run
    marker without manifest) or ``"foreign"`` (other files only). ``kind``: the run's kind
    (``None`` when unknown). ``owned``: the files the run wrote; ``foreign``: the others.
    ``pending``: the staging manifest of an unfinished ``overwrite`` run with files, or ``None``.
    """

    def __init__(self, out: Path, patterns: Sequence[str]) -> None:
        self.out = out
        self.manifest: dict[str, Any] | None = None
        self.kind: str | None = None
        self.finished = False
        self.pending: dict[str, Any] | None = None
        files = _files(out)
        self.files = files
        names = [f for f in files if f.rsplit("/", 1)[-1] not in _SYSTEM_FILES]
        raw = _read_json(out / MANIFEST) if (out / MANIFEST).exists() else None
        if (out / MANIFEST).exists():
            manifest = raw if isinstance(raw, dict) else {}
            self.manifest = manifest
            kind = manifest.get("kind")
            self.kind = kind if isinstance(kind, str) else None
            self.finished = manifest.get("state") == "complete"
            listed = manifest.get("files")
            listed = [f for f in listed if isinstance(f, str)] if isinstance(listed, list) else []
            own = set(listed)
            if not self.finished:  # an unfinished run: what it may have written so far
                declared = manifest.get("outputs")
                if not (isinstance(declared, list) and all(isinstance(p, str) for p in declared)):
                    declared = list(patterns)
                match = _glob(declared)
                own |= {f for f in names if match.fullmatch(f)}
            self.owned = sorted(f for f in names if f in own)
            self.state = "run" if self.owned or self.finished else "empty"
            if self.state == "empty":  # a claim that wrote nothing: no run there
                self.manifest, self.kind = None, None
        elif any(marker in files for marker in RUN_MARKERS):
            match = _glob(patterns)
            self.owned = sorted(f for f in names if match.fullmatch(f))
            self.state = "legacy"
        else:
            self.owned = []
            self.state = "new" if not out.exists() else ("foreign" if names else "empty")
        owned = set(self.owned)
        self.foreign = sorted(f for f in names if f not in owned)
        work = out / WORK_FOLDER
        staged = _read_json(work / _STAGING_MANIFEST)
        if isinstance(staged, dict) and _files(work / _STAGING, top=False):
            self.pending = staged

    def describe(self) -> str:
        """``"a finished quantize run"``, ``"an unfinished run"``, ..."""
        if self.state == "legacy":
            held = [m for m in RUN_MARKERS if m in self.files]
            return f"a run ({', '.join(held)})"
        done = "finished" if self.finished else "unfinished"
        return f"{'a' if done == 'finished' else 'an'} {done} {self.kind or 'risloss'} run"


# The claim -----------------------------------------------------------------------------------


class OutputFolder:
    """A claimed output folder: where a run writes, and what happens when it ends.

    Made by :func:`claim_output`, which holds the folder's lock until :meth:`close` (or the
    end of the ``with`` block). Leaving the block without an error commits the run
    (:meth:`commit`); leaving it with an error (or Ctrl-C) keeps the earlier run as it was and
    sets :attr:`outcome`. Pass :attr:`path` to the run as its output folder: every file the
    run writes, its checkpoint included, goes there.

    Attributes:
        out: the output folder the user named.
        path: where this run writes: ``out`` itself, or its staging folder (``overwrite``,
            or ``resume`` of an unfinished ``overwrite`` run).
        kind: the kind of run (``"quantize"``, ``"synthesize"``, ...).
        staged: whether the run writes into the staging folder.
        previous: what ``out`` held when claimed: ``"new"``, ``"empty"``, ``"run"``
            (a manifest), ``"legacy"`` (a run of a version without manifest), ``"foreign"``.
        committed: whether the run's files are in place (after :meth:`commit`).
        outcome: after the run ended without a commit, one line saying what became of the
            folder (``None`` before, and after a commit).
    """

    def __init__(
        self,
        out: Path,
        kind: str,
        *,
        label: str,
        survey: _Survey,
        staged: bool,
        resumed_staging: bool,
        command: str | None,
        patterns: Sequence[str],
        lock: _Lock,
        made: list[Path],
    ) -> None:
        self.out = out
        self.kind = kind
        self.label = label
        self.staged = staged
        self.work = out / WORK_FOLDER
        self.path = self.work / _STAGING if staged else out
        self.previous = survey.state
        self.committed = False
        self.outcome: str | None = None
        self._survey = survey
        self._resumed_staging = resumed_staging
        self._command = command
        self._patterns = tuple(patterns)
        self._lock = lock
        self._made = made  # folders the claim created (removed again if nothing was written)
        self._manifest_bytes = self._read_bytes(out / MANIFEST)
        self._before = survey.files  # the folder's files when claimed (direct writing)
        self._declared: set[str] = set()  # names given to path_for
        self._wrote_manifest = False

    @staticmethod
    def _read_bytes(path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except OSError:
            return None

    def __repr__(self) -> str:
        return (
            f"OutputFolder({str(self.out)!r}, kind={self.kind!r}, staged={self.staged}, "
            f"previous={self.previous!r})"
        )

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and not self.committed:
                self.commit()
        finally:
            self.close()

    def path_for(self, name: str) -> Path:
        """Where the run writes its file (or folder) ``name``, a path relative to the output
        folder; the name is recorded as one of the run's files (beside those matching the
        claim's ``outputs`` patterns, which need no call).

        Raises:
            ValueError: ``name`` absolute, empty, leaving the folder (``..``), or one of the
                claim's own names.

        Example:
            >>> import tempfile
            >>> from pathlib import Path
            >>> from risloss._outputs import claim_output
            >>> out = Path(tempfile.mkdtemp())
            >>> with claim_output(out, "synthesize") as folder:
            ...     folder.path_for("synthetic/0/00000.png") == out / "synthetic/0/00000.png"
            True
        """
        rel = Path(name)
        if (
            not name
            or rel.is_absolute()
            or ".." in rel.parts
            or rel.parts[0] in _INTERNAL
            or rel.as_posix() in (".", "")
        ):
            raise ValueError(
                f"name must be a path inside the output folder (not {MANIFEST} or "
                f"{WORK_FOLDER}), got {name!r}"
            )
        self._declared.add(rel.as_posix())
        return self.path / rel

    # Ending -----------------------------------------------------------------------------------

    def commit(self) -> None:
        """Put the run's files in place and record them in the manifest.

        Writing straight into the folder, this only writes the manifest. Staged, the earlier
        run's files (and files in the way of the new ones) are set aside, the new files moved
        in, the manifest written, then the set-aside files removed; if any step fails,
        everything is put back and :class:`OutputCommitError` is raised. Killed midway, the
        journal lets the next claim finish or undo the commit.

        Raises:
            OutputCommitError: the files could not be moved (the earlier run is as it was;
                the new run's files stay in the staging folder, for ``resume``).
            RuntimeError: the claim was already closed.
        """
        if self._lock.fd is None:
            raise RuntimeError(f"the claim of {self.out} is closed; commit before closing it")
        if self.committed:
            return
        if self.staged:
            self._commit_staged()
        else:
            self._record("complete")
            self.committed = True
        self.outcome = None

    def close(self) -> None:
        """Release the folder. Without a commit: keep what the run wrote (to resume it), or,
        when it wrote nothing, put the folder back as it was; :attr:`outcome` says which."""
        if self._lock.fd is None:
            return
        try:
            if not self.committed:
                self.outcome = self._abandon()
        finally:
            self._lock.release()
            if not self.committed:  # folders the claim made, when the run left them empty
                for folder in reversed(self._made):
                    with contextlib.suppress(OSError):
                        folder.rmdir()

    def _changed(self) -> list[str]:
        """The run's files written (created or changed) in ``out`` since the claim: those
        that match its output patterns or lie at (or under) a name given to :meth:`path_for`;
        a file that someone else put there meanwhile is not the run's."""
        match = _glob(self._patterns)
        declared = tuple(self._declared)

        def ours(rel: str) -> bool:
            return bool(match.fullmatch(rel)) or any(
                rel == d or rel.startswith(f"{d}/") for d in declared
            )

        now = _files(self.out)
        return sorted(f for f, st in now.items() if self._before.get(f) != st and ours(f))

    def _record(self, state: str) -> None:
        """Write the manifest of a run that writes straight into ``out``."""
        now = _files(self.out)
        files = sorted(set(self._survey.owned) & now.keys() | set(self._changed()))
        _write_json(self.out / MANIFEST, self._manifest(state, files))
        self._wrote_manifest = True

    def _manifest(self, state: str, files: list[str]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "command": self._command,
            "state": state,
            "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "outputs": list(self._patterns),
            "files": files,
        }

    def _abandon(self) -> str:
        """The run ended without a commit: what stays, in one line."""
        if self.staged:
            staged = _files(self.path, top=False)
            if staged:
                return (
                    f"{self.label}: the earlier run's files are as they were; this run's files "
                    f"are kept apart in {self.path}: continue it with --resume, or start over "
                    "with --overwrite"
                )
            with contextlib.suppress(OSError):
                shutil.rmtree(self.path)
            with contextlib.suppress(OSError):
                (self.work / _STAGING_MANIFEST).unlink()
            return f"{self.label}: the earlier run's files are as they were"
        if self._changed():
            with contextlib.suppress(OSError):  # the manifest of the claim says "running"
                self._record("running")
            return (
                f"{self.label} holds this unfinished run: continue it with --resume, or start "
                "over with --overwrite"
            )
        # Nothing written: the folder goes back to what it was.
        path = self.out / MANIFEST
        if self._manifest_bytes is None:
            with contextlib.suppress(OSError):
                path.unlink()
        elif self._wrote_manifest:
            with contextlib.suppress(OSError):
                path.write_bytes(self._manifest_bytes)
        return f"{self.label}: nothing was written" + (
            "" if self.previous == "new" else "; the folder is as it was"
        )

    def _commit_staged(self) -> None:
        out, work = self.out, self.work
        staging = work / _STAGING
        new = sorted(_files(staging, top=False))
        present = _files(out)
        earlier = _Survey(out, self._patterns)
        old = sorted(set(earlier.owned) | (set(new) & present.keys()))
        if (out / MANIFEST).exists():
            old.append(MANIFEST)
        leaving = set(old)
        for rel in new:  # what cannot be moved in: fail before touching anything
            target = out / rel
            if target.is_dir() and not target.is_symlink():
                raise OutputCommitError(
                    f"{self.label}: cannot put {rel} in place, {target} is a folder; this "
                    f"run's files are kept apart in {staging}"
                )
            for parent in _parents(rel):
                p = out / parent
                if (p.is_symlink() or (p.exists() and not p.is_dir())) and parent not in leaving:
                    raise OutputCommitError(
                        f"{self.label}: cannot put {rel} in place, {p} is a file; this run's "
                        f"files are kept apart in {staging}"
                    )
        dirs = sorted(
            {d for rel in new for d in _parents(rel) if not (out / d).is_dir()}
            | {d for rel in new for d in _parents(rel) if d in leaving}
        )
        journal = {"format": FORMAT, "state": "moving", "old": old, "new": new, "dirs": dirs}
        try:
            _write_json(work / _JOURNAL, journal)
            _step("journal")
            for rel in old:
                _move(out / rel, work / _OLD / rel)
                _step("set-aside")
            for rel in new:
                _move(staging / rel, out / rel)
                _step("moved-in")
            _write_json(out / MANIFEST, self._manifest("complete", new))
            _step("manifest")
            _write_json(work / _JOURNAL, {**journal, "state": "done"})
        except BaseException as exc:
            try:
                _roll_back(out, journal)
            except OSError as undo:
                raise OutputCommitError(
                    f"{self.label}: the commit failed ({exc}) and could not be undone "
                    f"({undo}); the next run into it finishes the undo"
                ) from exc
            if isinstance(exc, OSError):
                raise OutputCommitError(
                    f"{self.label}: cannot put this run's files in place "
                    f"({exc.strerror or exc}); the earlier run's files are as they were, this "
                    f"run's are kept apart in {staging}"
                ) from exc
            raise
        self.committed = True  # the commit point is passed: what remains is cleaning up
        _step("done")
        with contextlib.suppress(OSError):  # else the next claim of the folder finishes it
            _finish(out, journal)


def _roll_back(out: Path, journal: dict[str, Any]) -> None:
    """Undo a commit that did not reach its end: new files back to staging, old ones back."""
    work = out / WORK_FOLDER
    staging, aside = work / _STAGING, work / _OLD
    for rel in reversed(journal["new"]):
        src, dst = out / rel, staging / rel
        if os.path.lexists(src) and not os.path.lexists(dst):
            _move(src, dst)
    for rel in journal["old"]:
        src = aside / rel
        if os.path.lexists(src):
            if rel == MANIFEST or not os.path.lexists(out / rel):
                _move(src, out / rel)
    if not os.path.lexists(aside / MANIFEST) and MANIFEST not in journal["old"]:
        with contextlib.suppress(FileNotFoundError):
            (out / MANIFEST).unlink()  # the new run's manifest, when no earlier one was there
    _prune(out, journal["dirs"])
    shutil.rmtree(aside, ignore_errors=True)
    (work / _JOURNAL).unlink(missing_ok=True)


def _finish(out: Path, journal: dict[str, Any]) -> None:
    """The end of a commit that reached its manifest: remove what was set aside and the
    staging folder, and the folders the earlier run's files leave empty."""
    work = out / WORK_FOLDER
    shutil.rmtree(work / _OLD, ignore_errors=True)
    shutil.rmtree(work / _STAGING, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        (work / _STAGING_MANIFEST).unlink()
    _prune(out, {d for rel in journal["old"] for d in _parents(rel)})
    (work / _JOURNAL).unlink()


def _recover(out: Path) -> str | None:
    """Finish or undo a commit that was killed midway (under the lock); what was done."""
    path = out / WORK_FOLDER / _JOURNAL
    if not path.exists():
        return None
    journal = _read_json(path)
    if not (
        isinstance(journal, dict)
        and all(isinstance(journal.get(k), list) for k in ("old", "new", "dirs"))
    ):
        raise OutputFolderError(
            f"{out}: the record of an interrupted commit, {path}, is unreadable; move the "
            "files back by hand from its old/ and staging/ folders, then remove it"
        )
    if journal.get("state") == "done":
        _finish(out, journal)
        return "a commit that was interrupted was completed"
    _roll_back(out, journal)
    return "a commit that was interrupted was undone: the earlier run's files are back"


def _refuse(label: str, message: str) -> OutputFolderError:
    return OutputFolderError(f"{label} {message}")


def claim_output(
    out: str | os.PathLike[str],
    kind: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    command: str | None = None,
    outputs: Sequence[str] = RUN_FILES,
    label: str | None = None,
    option: str = "--out",
) -> OutputFolder:
    """Claim the output folder ``out`` for a run of ``kind``: check it, lock it, and say where
    the run writes.

    Checked under the lock, before any work: ``out`` new or empty (a new run writes into it);
    holding a run (``resume`` continues it if it is of the same ``kind``; ``overwrite``
    replaces it); holding other files only (``overwrite`` writes the run's files beside them,
    replacing only files of the same names). Every refusal is one line naming ``label`` and
    what to do. A commit that was killed midway is finished or undone first.

    Args:
        out: the output folder (created when it does not exist).
        kind: the kind of run, recorded in the manifest (``"quantize"``, ``"synthesize"``);
            ``resume`` continues only a run of the same kind.
        overwrite: replace what the folder holds, atomically: the run writes into a staging
            folder and its files replace the earlier ones only when it commits.
        resume: continue the run in the folder (an unfinished ``overwrite`` run first).
        command: the command line, recorded in the manifest.
        outputs: glob patterns of the files the run may write (see :data:`RUN_FILES`).
        label: names the folder in messages (default: ``"<option> <out>"``).
        option: the option that names the folder, for messages (``"choose another --out"``).

    Returns:
        The claimed :class:`OutputFolder`; use it as a context manager (or call
        :meth:`OutputFolder.close`).

    Raises:
        OutputInUseError: another run holds the folder (the message names its process).
        OutputFolderError: the folder may not be used as asked, or cannot be written.
        TypeError, ValueError: a bad argument (``resume`` with ``overwrite``, an empty
            ``kind``).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from risloss._outputs import OutputFolderError, claim_output
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> first = claim_output(out, "quantize")
        >>> try:
        ...     claim_output(out, "quantize")
        ... except OutputFolderError as err:
        ...     print(str(err).replace(str(out), "OUT"))  # doctest: +ELLIPSIS
        --out OUT is in use by another run (process ...): wait for it to end, or choose ...
        >>> first.close()
    """
    if not isinstance(out, str | os.PathLike):
        raise TypeError(f"out must be a path, got {type(out).__name__}")
    if not isinstance(kind, str) or not kind.strip():
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if overwrite and resume:
        raise ValueError("resume and overwrite exclude each other: continue a run, or replace it")
    if isinstance(outputs, str) or not all(isinstance(p, str) and p for p in outputs):
        raise TypeError(f"outputs must be a sequence of glob patterns, got {outputs!r}")
    path = Path(out)
    if not str(out).strip():
        raise OutputFolderError(f"{option}: expected an output folder, got an empty name")
    label = label or f"{option} {out}"
    if path.exists() and not path.is_dir():
        raise _refuse(label, "is a file, not a folder")
    if resume and not path.exists():
        raise _refuse(label, "does not exist: there is no run to continue with --resume")
    new = not path.exists()
    made: list[Path] = []
    lock = _Lock(path / WORK_FOLDER)
    try:
        for folder in reversed([path, *path.parents]):
            if not folder.exists():
                folder.mkdir()
                made.append(folder)
        if not (path / WORK_FOLDER).exists():
            made.append(path / WORK_FOLDER)
        lock.acquire(option, label)
    except OSError as exc:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise _refuse(label, f"cannot be written ({exc.strerror or exc})") from exc
    except OutputFolderError:
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    made = [m for m in made if m != path / WORK_FOLDER]  # released with the lock
    try:
        return _decide(
            path, kind, overwrite, resume, command, outputs, label, option, lock, made, new
        )
    except BaseException as exc:
        lock.release()
        for folder in reversed(made):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise _refuse(label, f"cannot be written ({exc.strerror or exc})") from exc
        raise


def _decide(
    out: Path,
    kind: str,
    overwrite: bool,
    resume: bool,
    command: str | None,
    outputs: Sequence[str],
    label: str,
    option: str,
    lock: _Lock,
    made: list[Path],
    new: bool,
) -> OutputFolder:
    """The claim's verdict, under the lock (see :func:`claim_output`)."""
    try:
        _recover(out)
    except OSError as exc:
        raise _refuse(
            label, f"holds an interrupted commit that cannot be undone ({exc.strerror or exc})"
        ) from exc
    survey = _Survey(out, outputs)
    if new and survey.state == "empty":
        survey.state = "new"
    pending, work = survey.pending, out / WORK_FOLDER
    again = "continue it with --resume, or start over with --overwrite"
    staged = resumed_staging = False
    if pending is not None and not overwrite:
        other = pending.get("kind")
        if not resume:
            raise _refuse(
                label,
                f"holds an unfinished --overwrite run (its files in {work / _STAGING}; the "
                f"earlier run's files are untouched): {again}",
            )
        if other != kind:
            raise _refuse(
                label,
                f"holds an unfinished --overwrite run of {other or 'another command'}, not of "
                f"{kind}: --resume continues a run of the same command; start over with "
                "--overwrite",
            )
        staged = resumed_staging = True
    elif overwrite:
        staged = survey.state in ("run", "legacy", "foreign") or pending is not None
    elif resume:
        if survey.state in ("new", "empty"):
            raise _refuse(label, "holds no run to continue with --resume")
        if survey.state == "foreign":
            raise _refuse(
                label,
                f"holds no risloss run to continue with --resume, only other files "
                f"({_listing(survey.foreign)})",
            )
        if survey.kind is not None and survey.kind != kind:
            raise _refuse(
                label,
                f"holds {survey.describe()}, not a {kind} run: --resume continues a run of the "
                f"same command; choose another {option}, or replace it with --overwrite",
            )
    elif survey.state in ("run", "legacy"):
        if survey.kind is not None and survey.kind != kind:
            raise _refuse(
                label, f"holds {survey.describe()}: choose another {option}, or replace it with "
                "--overwrite",
            )  # fmt: skip
        raise _refuse(label, f"already holds {survey.describe()}: {again}")
    elif survey.state == "foreign":
        raise _refuse(
            label,
            f"holds files that no risloss run wrote ({_listing(survey.foreign)}): choose a new "
            f"or empty {option}, or write beside them with --overwrite (they are kept; files "
            "of the names the run writes are replaced)",
        )
    if staged and not resumed_staging:
        shutil.rmtree(work / _STAGING, ignore_errors=True)
        (work / _STAGING).mkdir(parents=True)
        _write_json(
            work / _STAGING_MANIFEST,
            {"format": FORMAT, "kind": kind, "command": command, "pid": os.getpid()},
        )
    elif not staged:  # leftovers of an overwrite claim that wrote nothing
        shutil.rmtree(work / _STAGING, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (work / _STAGING_MANIFEST).unlink()
    folder = OutputFolder(
        out,
        kind,
        label=label,
        survey=survey,
        staged=staged,
        resumed_staging=resumed_staging,
        command=command,
        patterns=outputs,
        lock=lock,
        made=made,
    )
    if not staged and survey.state in ("new", "empty"):
        _write_json(out / MANIFEST, folder._manifest("running", []))  # the folder is a run's
        folder._wrote_manifest = True
    return folder


def recover_output(out: str | os.PathLike[str]) -> str | None:
    """Finish or undo a commit in ``out`` that was killed midway; what was done (``None``:
    there was none). :func:`claim_output` does this itself; this is for tools and tests.

    Raises:
        OutputInUseError: another run holds the folder.

    Example:
        >>> import tempfile
        >>> from risloss._outputs import recover_output
        >>> recover_output(tempfile.mkdtemp()) is None
        True
    """
    path = Path(out)
    if not (path / WORK_FOLDER).is_dir():
        return None
    lock = _Lock(path / WORK_FOLDER)
    lock.acquire("--out", f"{path}")
    try:
        return _recover(path)
    finally:
        lock.release()
