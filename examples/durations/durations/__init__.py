"""Parse and format human-friendly durations such as "1h30m" or "2 days, 4 hours"."""

from durations.format import format_duration
from durations.parse import DurationError, parse_duration

__all__ = ["DurationError", "format_duration", "parse_duration"]
__version__ = "0.3.1"
