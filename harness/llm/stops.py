"""Stop strings over a growing text: where to cut, and how much is safe to stream so far.

Pure Python so every backend (in-process, scripted, the engine later) trims the same way: the
stop string that completes first wins, and neither it nor anything after it is returned.
"""

from __future__ import annotations

from collections.abc import Sequence

# What a decoder prints for an incomplete UTF-8 sequence; it may still become a real character.
_REPLACEMENT = "\ufffd"


def first_stop(text: str, stops: Sequence[str]) -> int | None:
    """Start index of the stop string whose first occurrence ends earliest, or None."""
    best: tuple[int, int] | None = None  # (end, start)
    for stop in stops:
        if not stop:
            continue
        start = text.find(stop)
        if start >= 0 and (best is None or (start + len(stop), start) < best):
            best = (start + len(stop), start)
    return None if best is None else best[1]


def trim_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    cut = first_stop(text, stops)
    return (text, False) if cut is None else (text[:cut], True)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the tail that could still turn into a stop string or a different character."""
    hold = len(text) - len(text.rstrip(_REPLACEMENT))
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class StopScanner:
    """Feed it the whole decoded text after every token; it returns the new safe-to-show part.

    `stopped` turns True once a stop string appears; `text` is then final and trimmed.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._emitted = ""

    @property
    def emitted(self) -> str:
        return self._emitted

    def update(self, text: str) -> str:
        if self.stopped:
            return ""
        cut = first_stop(text, self.stops)
        if cut is not None:
            self.stopped = True
            safe = cut
        else:
            safe = len(text) - _held_back(text, self.stops)
        if safe <= len(self._emitted) or not text.startswith(self._emitted):
            # A decoder may rewrite its tail (e.g. bytes joining into one character): wait.
            return ""
        delta = text[len(self._emitted) : safe]
        self._emitted = text[:safe]
        return delta

    def finish(self, text: str) -> tuple[str, str]:
        """The final text (trimmed at a stop string) and the part of it not yet emitted."""
        if self.stopped:
            final = self._emitted
        else:
            cut = first_stop(text, self.stops)
            self.stopped = cut is not None
            final = text if cut is None else text[:cut]
        rest = final[len(self._emitted) :] if final.startswith(self._emitted) else ""
        self._emitted += rest
        return final, rest
