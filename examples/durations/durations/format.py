"""Formatting seconds as a compact duration string."""

from durations.units import SECONDS

_ORDER = ["w", "d", "h", "m", "s"]


def format_duration(seconds, max_units=None):
    """Format `seconds` as "1h 30m"; `max_units` keeps only the largest components."""
    if seconds < 0:
        return "-" + format_duration(-seconds, max_units)
    remaining = int(round(seconds))
    if remaining == 0:
        return "0s"
    parts = []
    for unit in _ORDER:
        size = SECONDS[unit]
        count, remaining = divmod(remaining, size)
        if count:
            parts.append("%d%s" % (count, unit))
    if max_units is not None:
        parts = parts[:max_units]
    return " ".join(parts)
