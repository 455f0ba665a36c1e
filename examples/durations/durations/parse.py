"""Parsing duration strings into seconds."""

import re

from durations.units import SECONDS, canonical

_COMPONENT = re.compile(r"(\d+)\s*([a-zA-Z]+)")
_SEPARATORS = re.compile(r"[\s,]+")


class DurationError(ValueError):
    """Raised for strings that are not durations."""


def parse_duration(text):
    """Return the number of seconds in `text`, e.g. "1h30m" -> 5400.0.

    A bare number is taken as seconds. Components may be separated by spaces or commas and
    may repeat units ("1h 1h" is two hours).
    """
    if isinstance(text, (int, float)):
        return float(text)
    stripped = text.strip()
    if not stripped:
        raise DurationError("empty duration")
    try:
        return float(stripped)
    except ValueError:
        pass
    total = 0.0
    pos = 0
    compact = _SEPARATORS.sub("", stripped)
    for match in _COMPONENT.finditer(compact):
        if match.start() != pos:
            raise DurationError("cannot parse %r near %r" % (text, compact[pos:match.start()]))
        unit = canonical(match.group(2))
        if unit is None:
            raise DurationError("unknown unit %r in %r" % (match.group(2), text))
        total += int(match.group(1)) * SECONDS[unit]
        pos = match.end()
    if pos != len(compact):
        raise DurationError("cannot parse %r near %r" % (text, compact[pos:]))
    return total
