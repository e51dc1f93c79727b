"""Errors every part of the package may raise and the command line (`mm_unidpo.cli`) turns into exit codes.

    UsageError   a command line that cannot run as written (a flag's value, a combination of flags): exit 2

Any other exception of a subcommand is a failure: one message on stderr, exit 1 (see `mm_unidpo.cli.main`).
"""

from __future__ import annotations


class UsageError(ValueError):
    """A command line that cannot run as written; `mm-unidpo` exits with status 2 (as for argparse's errors)."""
