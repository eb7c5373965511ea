"""The QEMU guests' times in pytest's summary: every boot, visible without ``-s``."""

from __future__ import annotations

import pytest

from .guest import BOOTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not BOOTS:
        return
    terminalreporter.section("QEMU guests")
    for flavour, run in BOOTS:
        times = ", ".join(f"{name} {seconds:.1f}" for name, seconds in run.times.items())
        ok = sum(r.ok for r in run.results.values())
        terminalreporter.write_line(
            f"{flavour}: {run.seconds:.1f} s from QEMU start to exit, {ok}/{len(run.results)}"
            f" checks ok; in the guest (s): {times}"
        )
