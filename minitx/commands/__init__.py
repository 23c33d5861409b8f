"""Implementations of the `minitx` subcommands (wired in minitx/cli.py)."""
