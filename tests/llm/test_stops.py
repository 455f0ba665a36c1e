"""Stop strings: which one wins, and streaming never shows a stop string or takes text back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.llm.stops import StopScanner, first_stop, trim_at_stop


def test_the_stop_that_completes_first_wins() -> None:
    assert first_stop("abcd", ["abcd", "c"]) == 2
    assert first_stop("xx END yy STOP", ["STOP", "END"]) == 3
    assert first_stop("nothing here", ["STOP", ""]) is None
    assert trim_at_stop("answer\n```\nmore", ["```"]) == ("answer\n", True)
    assert trim_at_stop("answer", []) == ("answer", False)


def test_scanner_holds_back_a_possible_stop_prefix() -> None:
    scanner = StopScanner(["</patch>"])
    assert scanner.update("fix </pa") == "fix "
    assert scanner.update("fix </pat") == ""
    assert scanner.update("fix </path>") == "</path>"  # not the stop after all
    assert scanner.update("fix </path></patch> tail") == ""
    assert scanner.stopped
    assert scanner.finish("fix </path></patch> tail and more") == ("fix </path>", "")


def test_scanner_holds_back_incomplete_characters() -> None:
    scanner = StopScanner([])
    assert scanner.update("caf\ufffd") == "caf"
    assert scanner.update("café") == "é"
    assert scanner.finish("café!") == ("café!", "!")


chunks = st.lists(st.text(alphabet="abXY\n", max_size=4), max_size=12)
stops = st.lists(st.text(alphabet="abXY\n", min_size=1, max_size=3), max_size=3)


@given(chunks=chunks, stops=stops)
def test_streamed_text_is_the_trimmed_text(chunks: list[str], stops: list[str]) -> None:
    scanner = StopScanner(stops)
    text, shown = "", ""
    for chunk in chunks:
        text += chunk
        shown += scanner.update(text)
        if scanner.stopped:
            break
    final, rest = scanner.finish(text)
    shown += rest
    assert shown == final
    assert not any(stop in final for stop in stops)
    assert text.startswith(final)
