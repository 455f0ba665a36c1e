"""The project's own test for the fix (not shown to the model)."""

import pytest

from durations import DurationError, parse_duration


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("1.5h", 5400.0),
        ("2h 0.5m", 7230.0),
        ("0.25d", 21600.0),
        (".5m", 30.0),
        ("1h30m", 5400.0),
        ("2 days, 4 hours", 187200.0),
    ],
)
def test_fractional_components(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["1..5h", "1.5", "h"])
def test_still_strict(text):
    if text == "1.5":
        assert parse_duration(text) == 1.5
        return
    with pytest.raises(DurationError):
        parse_duration(text)
