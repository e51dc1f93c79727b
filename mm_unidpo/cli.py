"""`mm-unidpo`: one command, a subcommand per job. Each subcommand lives in the module that does the
job and is imported only when used, so `mm-unidpo losses` does not import transformers."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable


def _losses(args: argparse.Namespace) -> int:
    from mm_unidpo.losses import LOSSES

    for name, objective in LOSSES.items():
        params = ", ".join(f"{k}={v!r}" for k, v in objective.parameters().items())
        ref = "reference" if objective.needs_reference else "reference-free"
        print(f"{name:8s} ({ref}): {params}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mm_unidpo.demo import main as demo_main

    return demo_main(args.rest)


def _train(args: argparse.Namespace) -> int:
    from mm_unidpo.train.run import main as train_main

    return train_main(args.rest)


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "losses": (_losses, "list the objectives of the loss core and their parameters"),
    "train": (_train, "train with a YAML config: mm-unidpo train CONFIG.yaml [--section.key=value ...]"),
    "demo": (_demo, "run the embedded default end to end (see README)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mm-unidpo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, add_help=name == "losses")
        p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return COMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
