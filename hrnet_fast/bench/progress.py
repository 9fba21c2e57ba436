"""A progress bar that degrades: rich, else tqdm, else nothing."""
from __future__ import annotations

import sys
from typing import Any, Optional


class Progress:
    """Counts the calls of a run. Use as a context manager; `advance()` after
    each call, `describe()` when the phase changes."""

    def __init__(self, total: int, description: str, enabled: bool = True) -> None:
        self.total = total
        self.description = description
        self.enabled = enabled
        self._rich: Any = None
        self._task: Any = None
        self._tqdm: Any = None

    def __enter__(self) -> "Progress":
        if not self.enabled:
            return self
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                                       TimeElapsedColumn)

            self._rich = RichProgress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), transient=True)
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total)
            return self
        except ImportError:
            pass
        try:
            from tqdm import tqdm

            self._tqdm = tqdm(total=self.total, desc=self.description, file=sys.stderr, leave=False)
        except ImportError:
            pass
        return self

    def advance(self, n: int = 1) -> None:
        """Count `n` more calls done."""
        if self._rich is not None:
            self._rich.advance(self._task, n)
        elif self._tqdm is not None:
            self._tqdm.update(n)

    def describe(self, text: str) -> None:
        """Show what the run is doing now."""
        if self._rich is not None:
            self._rich.update(self._task, description=text)
        elif self._tqdm is not None:
            self._tqdm.set_description(text)

    def set_total(self, total: int) -> None:
        """Change the expected number of calls (e.g. when a time budget
        shortens the run)."""
        self.total = total
        if self._rich is not None:
            self._rich.update(self._task, total=total)
        elif self._tqdm is not None:
            self._tqdm.total = total
            self._tqdm.refresh()

    def __exit__(self, *exc: Optional[BaseException]) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self._tqdm is not None:
            self._tqdm.close()
