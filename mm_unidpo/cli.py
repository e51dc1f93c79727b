"""`mm-unidpo`: one command, a subcommand per job. Each subcommand lives in the module that does the
job and is imported only when used, so `mm-unidpo losses` does not import transformers."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from mm_unidpo import __version__
from mm_unidpo.cli_args import HelpFormatter
from mm_unidpo.errors import UsageError


def _losses(args: argparse.Namespace) -> int:
    from mm_unidpo.losses import LOSSES, OPTIONS, PRESETS  # lazy: keeps --help fast

    print("options every objective takes unless it refuses them:")
    for option, option_params in OPTIONS.items():
        print(f"  {option}: " + ", ".join(f"{k}={v!r}" for k, v in option_params.items()))
    print()
    for name, objective in LOSSES.items():
        params = ", ".join(f"{k}={v!r}" for k, v in objective.own_parameters().items())
        ref = "reference" if objective.needs_reference else "reference-free"
        print(f"{name} ({ref}): {params or 'no parameters'}")
        for option, why in objective.refuses.items():
            print(f"    refuses {option}: {why}")
        overrides = {
            k: v
            for k, v in objective.defaults.items()
            if k in objective.parameters() and k not in objective.own_parameters()
        }
        if overrides:
            print("    defaults: " + ", ".join(f"{k}={v!r}" for k, v in overrides.items()))
    print()
    for name, components in PRESETS.items():
        parts = ", ".join(f"{c['name']} {c['weight']}" for c in components)
        print(f"{name} (preset mixture): {parts}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mm_unidpo.demo import main as demo_main  # lazy: keeps --help fast

    return demo_main(args.rest)


def _train(args: argparse.Namespace) -> int:
    from mm_unidpo.train.run import main as train_main  # lazy: keeps --help fast

    return train_main(args.rest)


def _merge(args: argparse.Namespace) -> int:
    from mm_unidpo.train.merge import main as merge_main  # lazy: keeps --help fast

    return merge_main(args.rest)


def _convert(args: argparse.Namespace) -> int:
    from mm_unidpo.models.convert import main as convert_main  # lazy: keeps --help fast

    return convert_main(args.rest)


def _score(args: argparse.Namespace) -> int:
    from mm_unidpo.onpolicy.judges.scorers import main as score_main  # lazy: keeps --help fast

    return score_main(args.rest)


def _onpolicy(args: argparse.Namespace) -> int:
    import importlib

    return importlib.import_module(f"mm_unidpo.onpolicy.{args.command}").main(args.rest)


EVALUATIONS = {
    "math": "mm_unidpo.evaluation.math.harness",
    "lmms": "mm_unidpo.evaluation.lmms.cli",
}


def _eval(args: argparse.Namespace) -> int:
    import importlib

    if not args.rest or args.rest[0] not in EVALUATIONS:
        raise UsageError(f"usage: mm-unidpo eval {{{','.join(EVALUATIONS)}}} [options]  (--help on each)")
    return importlib.import_module(EVALUATIONS[args.rest[0]]).main(args.rest[1:])


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str]] = {
    "losses": (_losses, "list the objectives of the loss core and their parameters"),
    "train": (_train, "train with a YAML config: mm-unidpo train CONFIG.yaml [--section.key=value ...]"),
    "eval": (_eval, "evaluate: mm-unidpo eval math ... | mm-unidpo eval lmms ..."),
    "demo": (_demo, "run the embedded default end to end (see README)"),
    "merge": (_merge, "merge a LoRA adapter into its 16-bit base for serving: mm-unidpo merge ADAPTER_DIR --out DIR"),
    "convert": (
        _convert,
        "rewrite a checkpoint's PyTorch .bin weights as safetensors: mm-unidpo convert SRC --out DIR",
    ),
    "score": (
        _score,
        "fill missing quality scores: mm-unidpo score DATA --out FILE (--scorer M:F | --reward-model ID)",
    ),
    "generate": (_onpolicy, "sample responses: mm-unidpo generate DATA --model M --n 8 --out samples.jsonl"),
    "judge": (_onpolicy, "score samples: mm-unidpo judge samples.jsonl --judge KIND --out scored.jsonl"),
    "pairs": (_onpolicy, "pair judged samples: mm-unidpo pairs scored.jsonl --out pairs.jsonl"),
    "iterate": (_onpolicy, "rounds of generate, judge, pair, train, evaluate: mm-unidpo iterate CONFIG.yaml"),
}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand: the one place a failure becomes an exit status. Any exception is one message on
    stderr and exit 1; a usage error (argparse's, or `errors.UsageError`) exits 2; Ctrl-C exits 130; a
    closed pipe (`| head`) exits 141 without a traceback.
    `--debug` (anywhere on the line, or MM_UNIDPO_DEBUG=1) raises the exception instead, with its traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get("MM_UNIDPO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    prog = f"mm-unidpo {argv[0]}" if argv and argv[0] in COMMANDS else "mm-unidpo"
    try:
        return _dispatch(argv)
    except BrokenPipeError:  # `mm-unidpo losses | head`: the reader left; no traceback, as other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's exit flush must not hit the closed pipe again
        return 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as stop:  # argparse (usage errors: 2, --help: 0), or a subcommand's sys.exit
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        if debug:
            raise
        print(f"{prog}: error: {stop.code}", file=sys.stderr)
        return 1
    except Exception as error:
        if debug:
            raise
        print(f"{prog}: error: {_message(error)}", file=sys.stderr)
        if isinstance(error, UsageError):
            return 2
        print("(run again with --debug for the full traceback)", file=sys.stderr)
        return 1


MESSAGE_LIMIT = 2000  # characters: a 300-character file name repeated in a long message stays readable


def _message(error: BaseException) -> str:
    """Our errors already name the record, file or key; anything else also says what kind of error it is.
    A very long message keeps its start and end."""
    from_us = type(error).__module__.startswith("mm_unidpo") or type(error) in (ValueError, FileNotFoundError)
    text = str(error) or type(error).__name__
    text = text if from_us else f"{type(error).__name__}: {text}"
    if len(text) > MESSAGE_LIMIT:
        half = MESSAGE_LIMIT // 2
        text = f"{text[:half]} [... {len(text) - 2 * half} characters ...] {text[-half:]}"
    return text


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in COMMANDS:  # each subcommand parses its own options, --help included
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return COMMANDS[argv[0]][0](argparse.Namespace(command=argv[0], rest=argv[1:]))
    parser = argparse.ArgumentParser(
        prog="mm-unidpo",
        description=__doc__,
        epilog="--debug (anywhere): show the full traceback of a failure",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mm-unidpo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, add_help=name == "losses")
        p.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return COMMANDS[args.command][0](args)


if __name__ == "__main__":
    sys.exit(main())
