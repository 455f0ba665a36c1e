"""One exception tree for the whole package.

HarnessError                 every error we raise on purpose; `hint` says what to do
├── ConfigError              bad configuration, option or input file
│   └── ModelSpecError       a model spec that does not parse or resolve
├── SandboxError             sandboxes and images
│   ├── SandboxUnavailable   the backend cannot run here (no engine, no bwrap)
│   ├── RepoError            missing repository path, unknown commit, bad clone
│   └── ImageError           a base or environment image could not be built
├── LLMError                 model calls
│   ├── ModelStoreError      fetching / verifying a stored model failed
│   ├── LLMTransportError    server down, malformed reply, retries exhausted
│   └── ContextTooLong       the prompt does not fit the model's window
├── BudgetExceeded           a token or dollar cap would be overshot
├── TaskError                an issue / task cannot be loaded
└── GitHubError              GitHub REST failures (rate limit, auth, not found)
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class. `hint` is an actionable next step shown to the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class ConfigError(HarnessError):
    """Bad configuration, CLI option or input file."""


class ModelSpecError(ConfigError):
    """A model spec that does not parse or cannot be resolved."""


class SandboxError(HarnessError):
    """Sandbox or image failure."""


class SandboxUnavailable(SandboxError):
    """The requested backend cannot run on this machine."""


class RepoError(SandboxError):
    """Missing repository path, unknown commit, failed clone."""


class ImageError(SandboxError):
    """A base or environment image could not be built or found."""


class LLMError(HarnessError):
    """A model call failed."""


class ModelStoreError(LLMError):
    """Fetching or verifying a stored model failed."""


class LLMTransportError(LLMError):
    """The server is unreachable, replied with garbage, or retries ran out."""


class ContextTooLong(LLMError):
    """The prompt does not fit the model's context window."""


class BudgetExceeded(HarnessError):
    """A call would overshoot the token or dollar budget."""


class TaskError(HarnessError):
    """An issue or task cannot be loaded."""


class GitHubError(HarnessError):
    """A GitHub REST call failed."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
