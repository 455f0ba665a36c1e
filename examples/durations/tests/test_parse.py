import pytest

from durations import DurationError, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 90.0),
        ("45s", 45.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("2 days, 4 hours", 187200.0),
        ("1w", 604800.0),
        ("3 mins", 180.0),
    ],
)
def test_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 parsecs", "1h30"])
def test_parse_errors(text):
    with pytest.raises(DurationError):
        parse_duration(text)
