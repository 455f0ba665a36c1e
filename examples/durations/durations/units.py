"""Unit names and their length in seconds."""

SECONDS = {
    "w": 7 * 24 * 3600,
    "d": 24 * 3600,
    "h": 3600,
    "m": 60,
    "s": 1,
}

ALIASES = {
    "week": "w", "weeks": "w", "wk": "w", "wks": "w",
    "day": "d", "days": "d",
    "hour": "h", "hours": "h", "hr": "h", "hrs": "h",
    "minute": "m", "minutes": "m", "min": "m", "mins": "m",
    "second": "s", "seconds": "s", "sec": "s", "secs": "s",
}


def canonical(unit):
    """Map a unit name ("hours", "hr", "H") to its one-letter form, or None."""
    unit = unit.strip().lower()
    if unit in SECONDS:
        return unit
    return ALIASES.get(unit)
