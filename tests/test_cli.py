"""The README's main job: `rbr-fast demo` (ops tour, then the RBR reward on the embedded SmolLM2)."""
import importlib.util

import pytest

from rbr_fast.cli import grade_examples, main
from rbr_fast.grading import embedded


def test_demo_ops_part(capsys):
    assert main(["demo", "--batch", "8", "--length", "40", "--no-bench", "--no-grader", "--no-ppo"]) == 0
    assert "max |diff| vs reference" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec(embedded.PACKAGE) is None,
                    reason=f"embedded model not installed ({embedded.INSTALL})")
def test_demo_reward_part(capsys):
    grade_examples("cpu")
    out = capsys.readouterr().out
    assert out.count("RBR reward") == 3 and "[hard_refuse]" in out and "[comply]" in out
