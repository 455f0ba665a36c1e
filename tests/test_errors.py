"""The exception tree carries actionable hints."""

from harness.errors import ConfigError, HarnessError, ModelSpecError, SandboxUnavailable
from harness.text import CappedBuffer, middle_truncate


def test_hint_is_rendered() -> None:
    exc = SandboxUnavailable("no engine", hint="start dockerd")
    assert str(exc) == "no engine\nhint: start dockerd"
    assert isinstance(exc, HarnessError)


def test_spec_error_is_config_error() -> None:
    assert issubclass(ModelSpecError, ConfigError)


def test_middle_truncate_keeps_head_and_tail() -> None:
    text = "a" * 100 + "b" * 100
    out = middle_truncate(text, 20)
    assert out.startswith("a" * 10) and out.endswith("b" * 10)
    assert "180 characters truncated" in out
    assert middle_truncate("short", 20) == "short"


def test_capped_buffer_is_flat() -> None:
    buf = CappedBuffer(1000)
    for i in range(10_000):
        buf.write(b"%05d\n" % i)
    value = buf.getvalue()
    assert value.startswith("00000\n") and value.endswith("09999\n")
    assert buf.total == 60_000 and buf.dropped == 59_000
    assert len(buf._tail) <= 1000  # memory stays bounded
