"""Choosing among candidate patches: voting, the selection loop, ensembling."""
