"""What an interrupted trustlab command may print."""

from __future__ import annotations


def assert_no_trustlab_traceback(err: str) -> None:
    """No traceback through trustlab's code.

    A SIGINT that lands while CPython itself is still starting (importing runpy or site: seen
    under load within the first 50 ms) is reported by the interpreter before any trustlab code
    exists to handle it, and nothing has been started then; that one is allowed.
    """
    if "Traceback" not in err:
        return
    assert "KeyboardInterrupt" in err and "harness" not in err, err
