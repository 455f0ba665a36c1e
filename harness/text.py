"""Text helpers: middle truncation with a visible marker, shared by sandboxes and prompts."""

from __future__ import annotations

MARKER = "\n[... {n} characters truncated ...]\n"


def middle_truncate(text: str, limit: int) -> str:
    """Keep the head and tail of `text` so the total is about `limit` characters."""
    if limit <= 0 or len(text) <= limit:
        return text
    half = limit // 2
    dropped = len(text) - 2 * half
    return text[:half] + MARKER.format(n=dropped) + text[len(text) - half :]


class CappedBuffer:
    """Accumulates a byte stream keeping only the first and last `cap // 2` bytes.

    Memory stays flat however much is written; `dropped` counts what was cut.
    """

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 2)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        half = self.cap // 2
        room = half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * half:  # trim in amortised batches
                del self._tail[: len(self._tail) - half]

    @property
    def dropped(self) -> int:
        return max(0, self.total - len(self._head) - min(len(self._tail), self.cap // 2))

    def getvalue(self) -> str:
        half = self.cap // 2
        tail = bytes(self._tail[-half:]) if len(self._tail) > half else bytes(self._tail)
        head = bytes(self._head).decode("utf-8", "replace")
        if self.dropped:
            return head + MARKER.format(n=self.dropped) + tail.decode("utf-8", "replace")
        return head + tail.decode("utf-8", "replace")
