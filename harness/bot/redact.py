"""Secret redaction: every text the bot writes (comments, PR bodies, logs, errors) passes here."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping

MASK = "***"
# Names of environment variables whose values are treated as secrets.
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)", re.I)
MIN_SECRET_LEN = 8  # shorter values would mask ordinary words (TOKENIZERS_PARALLELISM=false)


class Redactor:
    """Replaces known secret values (and their base64 / basic-auth forms) with `***`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values: set[str] = set()
        for secret in secrets:
            secret = secret.strip()
            if len(secret) < MIN_SECRET_LEN:
                continue
            values.add(secret)
            # git's extraheader carries the token as base64("x-access-token:<token>").
            for raw in (secret, f"x-access-token:{secret}"):
                values.add(base64.b64encode(raw.encode()).decode())
        # Longest first, so a secret containing another is masked whole.
        self._values = tuple(sorted(values, key=len, reverse=True))

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], extra: Iterable[str] = ()) -> Redactor:
        """Secrets = `extra` plus every variable whose name looks like a credential."""
        found = [value for name, value in environ.items() if SECRET_NAME.search(name)]
        return cls([*extra, *found])

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        return text

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"
