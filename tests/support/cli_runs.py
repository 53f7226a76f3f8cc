"""Running ``peftplug``'s command line in the test process, and what its errors must look like."""

from __future__ import annotations

import contextlib
import io

from peftplug.app.cli import main


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``peftplug ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(err: str, prefix: str) -> None:
    """``err`` is one line starting with ``prefix``, without a traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
