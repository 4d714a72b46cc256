"""The output folder of one tool run: never mixed with an older run, partial output always marked.

:class:`RunOutput` (used by ``da3-eval`` and ``da3-replay``):

- ``--out`` that already holds files is refused, unless ``overwrite``: then a folder that a da3 tool
  wrote (it has ``metrics.json``, ``report.json`` or ``PARTIAL``) is emptied first, and any other
  folder is still refused (``--out ~`` must never delete a home directory);
- a file ``PARTIAL`` is written when the run starts and removed only when it has finished, so a
  run that failed, was interrupted or was killed stays marked; on a failure ``PARTIAL`` says what
  went wrong and lists what was written, and the error names the partial output;
- :meth:`RunOutput.sizes` / :func:`size_line`: what the run wrote and how large it is.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from da3_ros.evaluation.report import folder_sizes, human_bytes
from da3_ros.tools.cli import ToolError, describe

MARKER = "PARTIAL"
#: Files by which a folder is recognised as the output of a da3 tool (it may be emptied with overwrite).
RUN_FILES = ("metrics.json", "report.json", MARKER)


class PartialOutputError(ToolError):
    """A run failed after writing output; the message names the output and its ``PARTIAL`` marker."""


def size_line(sizes: dict[str, int], most: int = 4) -> str:
    """``12.3 MB (predictions/ 10.1 MB, points.ply 2.0 MB, ...)`` from :meth:`RunOutput.sizes`."""
    parts = [f"{name} {human_bytes(n)}" for name, n in list(sizes.items())[:most]]
    if len(sizes) > most:
        parts.append(f"{len(sizes) - most} more")
    return f"{human_bytes(sum(sizes.values()))} ({', '.join(parts)})" if parts else "nothing"


class RunOutput:
    """The ``--out`` folder of one run of ``tool``.

    Args:
        path: the folder.
        tool: program name, for messages and the marker.
        overwrite: empty a previous run's folder instead of refusing it.
    """

    def __init__(self, path: str | Path, tool: str, overwrite: bool = False):
        self.path, self.tool, self.overwrite = Path(path), tool, overwrite
        self.marker = self.path / MARKER
        #: called with the error line before a failed run is marked (e.g. to write a partial report)
        self.on_fail: Callable[[str], None] | None = None

    def prepare(self) -> None:
        """Create (or, with ``overwrite``, empty) the folder and mark the run as in progress.

        Raises:
            ToolError: the folder holds files and ``overwrite`` is off, or it is not a da3 tool's output.
        """
        p = self.path
        if p.exists() and not p.is_dir():
            raise ToolError(f"--out {p} is a file, not a folder")
        if p.is_dir() and any(p.iterdir()):
            if not self.overwrite:
                raise ToolError(f"--out {p} exists and is not empty; pass --overwrite to replace the "
                                "previous run, or choose another folder")
            if not any((p / name).exists() for name in RUN_FILES):
                raise ToolError(f"--out {p} holds files that no da3 tool wrote; refusing to empty it "
                                "even with --overwrite")
            for child in p.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        p.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(f"{self.tool} started {time.strftime('%Y-%m-%d %H:%M:%S')} and has not "
                               "finished: what is in this folder is incomplete.\n")

    def sizes(self) -> dict[str, int]:
        """``{top-level name: bytes}`` of what the run wrote (folders end in ``/``), largest first."""
        return folder_sizes(self.path, skip=(MARKER,))

    def complete(self) -> None:
        """The run finished: remove the marker."""
        self.marker.unlink(missing_ok=True)

    def failed(self, exc: BaseException) -> ToolError | None:
        """Record a failure: mark what was written as partial, or remove the folder when it is empty.

        Returns:
            The :class:`PartialOutputError` to raise (from ``exc``) when output was written, else None.
        """
        sizes = self.sizes()
        if not sizes:
            self.marker.unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass
            return None
        what = describe(exc) if isinstance(exc, Exception) else "interrupted"
        listing = "\n".join(f"  {name}  {human_bytes(n)}" for name, n in sizes.items())
        self.marker.write_text(f"{self.tool} FAILED; this folder holds partial output.\nerror: {what}\n"
                               f"written:\n{listing}\n")
        return PartialOutputError(f"{what}; partial output left in {self.path}: {size_line(sizes)}, "
                                  f"marked by {self.marker}")

    @contextmanager
    def running(self) -> Iterator[RunOutput]:
        """Prepare the folder, run the block, then mark it complete, or partial on any exception.

        An exception becomes a :class:`PartialOutputError` naming what was written (the original is
        its cause); Ctrl-C marks the output, says so on stderr and propagates.
        """
        self.prepare()
        try:
            yield self
        except KeyboardInterrupt as exc:
            err = self.failed(exc)
            if err is not None:
                print(f"{self.tool}: {err}", file=sys.stderr)
            raise
        except Exception as exc:
            if self.on_fail is not None:
                try:
                    self.on_fail(describe(exc))
                except Exception:  # noqa: BLE001, S110 - best effort: the original error matters
                    pass
            err = self.failed(exc)
            if err is None:
                raise
            raise err from exc
        self.complete()
