"""harness: a test-time-compute coding harness.

Importing this package has no side effects; the CLI lives in `harness.cli`.
"""

__version__ = "0.1.0"
