"""Stop strings over a growing text: where to cut, and how much is safe to stream so far.

Pure Python so every backend (in-process, scripted, the engine) trims the same way: the stop
string that completes first wins, and neither it nor anything after it is returned. Text grows
incrementally: `IncrementalDetokenizer` turns new token ids into new text by decoding a few
tokens (not the whole output), `StopScanner.push` and `StopStrings.feed` look only at the new
text plus the tail that could still start a stop string, so a request's cost is linear in its
length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

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
    """Give it the text as it grows; it returns the new safe-to-show part.

    `push(delta)` takes only the new text (linear in the output); `update(text)` takes the
    whole text so far (for decoders that may rewrite their tail). `stopped` turns True once a
    stop string appears; the text is then final and trimmed.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.stopped = False
        self._emitted = ""
        self._held = ""  # pushed text not shown yet: it may start a stop string

    @property
    def emitted(self) -> str:
        return self._emitted

    def push(self, delta: str) -> str:
        if self.stopped or not delta:
            return ""
        # A stop string can only start inside the held-back tail: anything shown before it
        # was no prefix of any stop string.
        buf = self._held + delta
        cut = first_stop(buf, self.stops)
        if cut is not None:
            self.stopped = True
            safe = cut
        else:
            safe = len(buf) - _held_back(buf, self.stops)
        out, self._held = buf[:safe], ("" if self.stopped else buf[safe:])
        self._emitted += out
        return out

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

    def finish_pushed(self) -> tuple[str, str]:
        """After `push` calls: the final text and the held-back part not yet emitted."""
        if self.stopped:
            return self._emitted, ""
        rest, self._held = self._held, ""
        self._emitted += rest
        return self._emitted, rest

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


class Tokenizer(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> Any: ...


MAX_HELD = 6  # tokens: a UTF-8 character has at most 4 bytes, a token at least one
MAX_CHAR_TOKENS = 3  # tokens an incomplete (at most 3 of 4 bytes) character can span


class IncrementalDetokenizer:
    """New text for new token ids, decoding only the last few tokens each time.

    The text of the ids since `read` is the decoding of `ids[prefix:]` minus that of
    `ids[prefix:read]` (the earlier tokens give context to decoders where a token's text depends
    on its neighbour); while it ends in an incomplete character nothing is released, for at
    most MAX_HELD tokens; after that, the text no later token can change is (invalid bytes
    print as the decoder prints them, the last few tokens wait for the rest of a character).
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # released so far
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=self.skip))

    def push(self, new: Sequence[int]) -> str:
        self.ids += new
        if len(self.ids) == self._read:
            return ""
        before = (
            self._decode(self.ids[self._prefix : self._read]) if self._read > self._prefix else ""
        )
        after = self._decode(self.ids[self._prefix :])
        held = len(self.ids) - self._read
        if len(after) <= len(before):
            return ""
        end = len(self.ids)
        if after.endswith(_REPLACEMENT):
            if held < MAX_HELD:
                return ""
            # Held long enough: bytes before the last few tokens are invalid for good, but
            # those tokens may still begin a character. Release what is final, keep the rest.
            found = self._final_prefix(before, after)
            if found is None:
                return ""
            end, after = found
        delta = after[len(before) :]
        self._prefix, self._read = self._read, end
        self.text += delta
        return delta

    def _final_prefix(self, before: str, after: str) -> tuple[int, str] | None:
        """(end, text) of the most new tokens whose text no later token can change: ending in
        a complete character, or else all but the last MAX_CHAR_TOKENS (a character spans at
        most 4 bytes, so later bytes only join those) when that text agrees with `after`."""
        held = len(self.ids) - self._read
        for cut in range(1, min(MAX_CHAR_TOKENS, held - 1) + 1):
            end = len(self.ids) - cut
            text = self._decode(self.ids[self._prefix : end])
            if len(text) > len(before) and not text.endswith(_REPLACEMENT):
                return end, text
            if cut == MAX_CHAR_TOKENS and len(text) > len(before) and after.startswith(text):
                return end, text
        return None

    def flush(self) -> str:
        """What an incomplete last character held back (as the decoder prints it)."""
        if self._read == len(self.ids):
            return ""
        before = (
            self._decode(self.ids[self._prefix : self._read]) if self._read > self._prefix else ""
        )
        after = self._decode(self.ids[self._prefix :])
        delta = after[len(before) :] if after.startswith(before) else ""
        self._prefix = self._read = len(self.ids)
        self.text += delta
        return delta


class StopStrings:
    """An engine `StopChecker`: which new token completes a stop string in the decoded output."""

    def __init__(self, tokenizer: Tokenizer, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.detok = IncrementalDetokenizer(tokenizer)
        self._keep = max((len(s) for s in self.stops), default=1) - 1
        self._tail = ""  # the last characters that could begin a stop string

    def _hit(self, delta: str) -> bool:
        window = self._tail + delta
        found = any(s in window for s in self.stops)
        self._tail = window[len(window) - self._keep :] if self._keep else ""
        return found

    def feed(self, tokens: Sequence[int]) -> int | None:
        if not self.stops or not tokens:
            return None
        d = self.detok
        saved = (len(d.ids), d._prefix, d._read, d.text, self._tail)
        if not self._hit(d.push(tokens)):
            return None
        if len(tokens) == 1:
            return 0
        # Several tokens at once (accepted drafts) hit: again one by one, for the exact cut.
        n, d._prefix, d._read, d.text, self._tail = saved
        del d.ids[n:]
        for i, tok in enumerate(tokens):
            if self._hit(d.push((tok,))):
                return i
        return len(tokens) - 1  # only the joint decoding shows it (a merged character)
