from durations import format_duration


def test_format():
    assert format_duration(5400) == "1h 30m"
    assert format_duration(0) == "0s"
    assert format_duration(90061) == "1d 1h 1m 1s"
    assert format_duration(90061, max_units=2) == "1d 1h"
    assert format_duration(-60) == "-1m"
