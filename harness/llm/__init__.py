"""Where tokens come from: one chat protocol, several backends."""
