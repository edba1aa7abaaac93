"""Running the ``vrx`` command inside a test and checking that it failed cleanly.

``vrx(...)`` calls :func:`vrx.cli.main` in this process (about ten times faster than a subprocess)
with stdout and stderr captured. An exception escaping ``main`` is what a user would see as a
traceback; it is returned in ``Result.exc``, never raised, so fuzz tests can report the case.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    exc: BaseException | None = None
    warnings: tuple[str, ...] = ()   # what vrx logged at WARNING or above

    def clean(self) -> bool:
        """Exit 0, or exit 1/2 with only one-line ``vrx ...`` messages on stderr; never a traceback."""
        if self.exc is not None or self.rc not in (0, 1, 2) or "Traceback" in self.err:
            return False
        lines = [line for line in self.err.splitlines() if line.strip()]
        if self.rc == 0:   # log lines and warnings may be there; a traceback is not
            return True
        return bool(lines) and all(line.startswith(("vrx ", "usage: ")) or line.startswith(" ") for line in lines)

    def __str__(self) -> str:
        return f"rc={self.rc} exc={self.exc!r}\nstdout: {self.out[-2000:]}\nstderr: {self.err[-2000:]}"


def vrx(*argv: str | Path) -> Result:
    """``vrx ARGV...`` in this process: exit code, stdout, stderr, and the exception if one escaped."""
    from vrx.cli import main

    out, err = io.StringIO(), io.StringIO()
    rc, exc = None, None
    logged = _Collect()
    root = logging.getLogger()
    root.addHandler(logged)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse: exit 2 with its usage line
            rc = e.code if isinstance(e.code, int) else 2
        except BaseException as e:  # noqa: BLE001  the traceback a user would see
            exc = e
        finally:
            root.removeHandler(logged)
    return Result(rc, out.getvalue(), err.getvalue(), exc, tuple(logged.messages))


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def vrx_process(*argv: str | Path, timeout: float = 120, cwd: Path | None = None) -> Result:
    """``python -m vrx ARGV...`` as its own process (for kills and concurrent writers)."""
    p = subprocess.run([sys.executable, "-m", "vrx", *map(str, argv)], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd, env=thread_env())
    return Result(p.returncode, p.stdout, p.stderr)


def thread_env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def copy_run(run: Path, dest: Path) -> Path:
    """A private copy of a run folder (its model folder stays shared: nothing writes it)."""
    shutil.copytree(run, dest)
    return dest


def toy_model_spec(run: Path) -> str:
    """The model spec of a run made by conftest.build_tiny_run."""
    return f"toy:{run.parent / 'model'}"


def save_png(path: Path, width: int, height: int, value: int = 128) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), (value, 255 - value, value // 2)).save(path)
    return path
