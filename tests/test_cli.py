"""`mm-unidpo`'s one failure handler (mm_unidpo/cli.py): whatever subcommand fails, the user sees one message
on stderr naming the command, and the exit status says what kind of failure it was (1: the job failed,
2: the command line cannot run as written, 130: interrupted); `--debug` shows the traceback instead."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mm_unidpo import cli
from mm_unidpo.errors import UsageError


def _one_message(err: str, command: str) -> None:
    assert err.startswith(f"mm-unidpo {command}: error: "), err
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1, err


# every subcommand that takes an input, given one that does not exist
MISSING_INPUT = [
    ("train", ["{missing}"]),
    ("merge", ["{missing}", "--out", "{tmp}/merged"]),
    ("convert", ["{missing}", "--out", "{tmp}/converted"]),
    ("score", ["{missing}", "--out", "{tmp}/scored.jsonl", "--scorer", "object_overlap"]),
    ("generate", ["{missing}", "--model", "m", "--out", "{tmp}/samples.jsonl"]),
    ("judge", ["{missing}", "--judge", "objects", "--out", "{tmp}/scored.jsonl"]),
    ("pairs", ["{missing}", "--out", "{tmp}/pairs.jsonl"]),
    ("iterate", ["{missing}"]),
    ("eval", ["lmms", "summarize", "{missing}"]),
]


@pytest.mark.parametrize("command,args", MISSING_INPUT, ids=[c for c, _ in MISSING_INPUT])
def test_every_subcommand_fails_with_one_message_and_exit_1(command, args, tmp_path, capsys):
    missing = str(tmp_path / "does-not-exist")
    argv = [command, *(a.format(missing=missing, tmp=tmp_path) for a in args)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    _one_message(err, command)
    assert "--debug" in err


USAGE_ERRORS = [
    ("generate", []),  # argparse: the data argument is missing
    ("judge", ["samples.jsonl", "--judge", "objects"]),  # argparse: --out is required
    ("eval", []),  # which evaluation
    ("eval", ["nonsense"]),
    ("eval", ["math", "--model", "m", "--data", "not-name-equals-source"]),
    ("demo", ["--methods", "nonsense"]),
]


@pytest.mark.parametrize("command,args", USAGE_ERRORS, ids=[f"{c} {' '.join(a)}".strip() for c, a in USAGE_ERRORS])
def test_usage_errors_exit_2(command, args, capsys):
    assert cli.main([command, *args]) == 2
    err = capsys.readouterr().err
    assert err.strip() and "Traceback" not in err


def test_usage_error_raised_by_a_subcommand_is_one_message(capsys, monkeypatch):
    def bad(args):
        raise UsageError("--flag: not like that")

    monkeypatch.setitem(cli.COMMANDS, "losses", (bad, "help"))
    assert cli.main(["losses"]) == 2
    assert capsys.readouterr().err == "mm-unidpo losses: error: --flag: not like that\n"


@pytest.mark.parametrize(
    "error,status,text",
    [
        (ValueError("data.jsonl, line 3: not JSON"), 1, "mm-unidpo losses: error: data.jsonl, line 3: not JSON"),
        (RuntimeError("CUDA out of memory"), 1, "mm-unidpo losses: error: RuntimeError: CUDA out of memory"),
        (SystemExit("a message instead of a status"), 1, "mm-unidpo losses: error: a message instead of a status"),
        (KeyboardInterrupt(), 130, "mm-unidpo losses: interrupted"),
    ],
    ids=["ours", "foreign", "exit with a message", "ctrl-c"],
)
def test_any_failure_of_a_subcommand_goes_through_the_handler(error, status, text, capsys, monkeypatch):
    def failing(args):
        raise error

    monkeypatch.setitem(cli.COMMANDS, "losses", (failing, "help"))
    assert cli.main(["losses"]) == status
    err = capsys.readouterr().err
    assert err.startswith(text) and "Traceback" not in err, err


def test_debug_raises_the_exception_itself(monkeypatch, capsys):
    def failing(args):
        raise ValueError("boom")

    monkeypatch.setitem(cli.COMMANDS, "losses", (failing, "help"))
    with pytest.raises(ValueError, match="boom"):
        cli.main(["losses", "--debug"])
    monkeypatch.setenv("MM_UNIDPO_DEBUG", "1")
    with pytest.raises(ValueError, match="boom"):
        cli.main(["losses"])


def test_help_and_success_exit_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert cli.main(["losses"]) == 0
    assert "unidpo" in capsys.readouterr().out
    assert cli.main(["no-such-command"]) == 2  # argparse's own usage error


def test_the_installed_command_exits_with_the_status(tmp_path):
    """End to end through the console script's entry point: stderr has the one message, no traceback."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from mm_unidpo.cli import main; sys.exit(main())",
            "pairs",
            str(tmp_path / "missing.jsonl"),
            "--out",
            str(tmp_path / "p.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    _one_message(proc.stderr, "pairs")


# ---- one convention for every subcommand ------------------------------------------------------------------

# each subcommand, and a default its --help must show (None: it has no option with a default to show)
HELP = {
    "generate": "(default: 8)",
    "judge": "(default: 16)",
    "pairs": "(default: best-worst)",
    "iterate": None,
    "score": None,
    "merge": None,
    "convert": None,
    "train": None,
    "demo": None,
    "eval math": "(default: 1024)",
    "eval lmms": "(default: INFO)",
}


@pytest.mark.parametrize("command", HELP)
def test_every_help_shows_the_defaults(command, capsys):
    assert cli.main([*command.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mm-unidpo") and "(default: None)" not in out and "(default: False)" not in out
    assert HELP[command] is None or HELP[command] in " ".join(out.split()), out


def test_one_flag_per_concept_old_names_kept():
    from mm_unidpo.evaluation.lmms.cli import _eval_parser
    from mm_unidpo.evaluation.math.harness import build_parser

    for argv in (["--model", "m", "--out", "o"], ["--pretrained", "m", "--output-path", "o"]):
        ns, _ = _eval_parser().parse_known_args(argv)
        assert (ns.pretrained, ns.output_path) == ("m", "o")
    for flag in ("--out", "--output-dir"):
        assert build_parser().parse_args(["--model", "m", flag, "o"]).output_dir == "o"


@pytest.mark.parametrize("command, old", [("score", "--reward-model"), ("merge", "--base")])
def test_the_model_is_model_everywhere(command, old, capsys):
    assert cli.main([command, "--help"]) == 0
    assert f"--model {old.upper().lstrip('-').replace('-', '_')}, {old}" in capsys.readouterr().out


def test_version_and_a_closed_pipe(capsys):
    with pytest.raises(SystemExit) as stop:
        cli._dispatch(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"mm-unidpo {cli.__version__}"
    # A subcommand printing far more than a pipe holds, read by `head -1`.
    code = (
        "import sys; from mm_unidpo import cli; "
        "cli.COMMANDS['losses'] = (lambda args: [print('x' * 99) for _ in range(50000)] and 0, ''); "
        "sys.exit(cli.main(['losses']))"
    )
    proc = subprocess.run(
        f'{sys.executable} -c "{code}" | head -1; echo "${{PIPESTATUS[0]}}"',
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
    )
    assert proc.stdout.splitlines() == ["x" * 99, "141"] and proc.stderr == "", proc.stderr


def test_a_path_typo_is_reported_before_heavy_imports():
    code = (
        "import sys, time; from mm_unidpo.cli import main; t = time.time(); "
        "rc = main(['eval', 'lmms', '--model', '/nonexistent/llava', '--tasks', 'pope']); "
        "print(rc, 'lmms_eval' in sys.modules, 'torch' in sys.modules, time.time() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    rc, lmms, torch, _ = proc.stdout.split()
    assert (rc, lmms, torch) == ("1", "False", "False"), proc.stderr
    assert "'/nonexistent/llava' is a local path that does not exist" in proc.stderr
    assert len(proc.stderr.splitlines()) == 2  # the message and the --debug hint
