"""``rbr-fast`` command line (also ``python -m rbr_fast``): one module per command, each with its
``register(subparsers)`` and ``run(args)``; the library below takes typed arguments.

  rbr-fast demo          a tour: the ops checked against the reference, a few completions graded by the
                         embedded SmolLM2, a short PPO run, a quick benchmark (outputs: rbr_fast_out/demo)
  rbr-fast bench         the full benchmark (``python -m rbr_fast.bench``; options pass through)
  rbr-fast grade         P(yes) of every rule-spec proposition for each row of a jsonl file
  rbr-fast eval-grader   grader accuracy per proposition against human labels (RBR gold set)
  rbr-fast train-grader  train proposition heads for a grader
  rbr-fast eval          the RBR reward on XSTest: ranking accuracy, refusal detection, Not-Unsafe /
                         Not-Overrefuse, hand-set and fitted weights against baselines
  rbr-fast fit           fit RBR weights on ranked comparisons
  rbr-fast synth         synthetic comparison data, one completion per quality class
  rbr-fast relabel       preference labels for response pairs from data-adaptive rule selection
  rbr-fast serve         the RBR reward over HTTP
  rbr-fast compile-check compile every Triton kernel for sm_80/sm_90 ahead of time (no GPU needed)
  rbr-fast experiment    RBR-PPO against its ablations (no RBR, hand-set weights) from an SFT start, judged
                         on held-out prompts before and after (outputs: rbr_fast_out/experiment)
  rbr-fast ppo           PPO on the RBR reward (``python -m rbr_fast.ppo``; ``--help`` lists the config fields)

Outputs go under ``rbr_fast_out/`` of the current folder unless an option names another place.
"""
from __future__ import annotations

import argparse
import sys

from . import compile_check, demo, eval_grader, eval_xstest, experiment, fit, grade, relabel, serve, synth, train_grader
from .common import ArgumentParser, run_command
from .demo import grade_examples  # noqa: F401  (the demo's grading part, run alone by the tests)



def main(argv: list[str] | None = None) -> int:
    """Run one ``rbr-fast`` command; user errors are one line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from .bench import main as bench_main
        return run_command("rbr-fast bench", lambda: bench_main(argv[1:]))
    if argv[:1] == ["ppo"]:
        from .ppo import run as ppo_run
        return run_command("rbr-fast ppo", lambda: ppo_run(argv[1:], prog="rbr-fast ppo"))
    p, commands = _parser()

    def command() -> int:
        a = p.parse_args(argv)
        return a.func(a)
    return run_command(f"rbr-fast {argv[0]}" if argv and argv[0] in commands else "rbr-fast", command)


def _parser() -> tuple[ArgumentParser, dict]:
    """The ``rbr-fast`` parser and its subcommand parsers by name."""
    from rbr_fast import __version__
    p = ArgumentParser(prog="rbr-fast", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"rbr-fast {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    demo.register(sub)
    sub.add_parser("bench", help="full benchmark; see `rbr-fast bench --help`")
    for command in (grade, eval_grader, train_grader, eval_xstest, fit, synth, relabel, serve, compile_check, experiment):
        command.register(sub)
    sub.add_parser("ppo", help="PPO on the RBR reward; see `rbr-fast ppo --help` (python -m rbr_fast.ppo; torchrun "
                               "for several processes)")
    return p, sub.choices
