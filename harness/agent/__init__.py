"""One trajectory = small state machines per stage (context, testing, editing)."""
