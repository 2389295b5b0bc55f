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


def test_ppo_options_from_the_config_dataclass(tmp_path):
    """`rbr-fast ppo` parses PPOConfig's fields with HfArgumentParser: a YAML file gives the defaults,
    the command line overrides them, both spellings of a field and the `--no_` form of a boolean work."""
    from rbr_fast.cli.ppo import parse
    f = tmp_path / "c.yaml"
    f.write_text("batch_size: 6\nmini_batch_size: 3\nlr: 1e-5\nrbr: false\n")
    cfg, resume = parse(["--config", str(f), "--mini-batch-size", "2", "--kl_coef", "0.1", "--resume"])
    assert (cfg.batch_size, cfg.mini_batch_size, cfg.lr, cfg.rbr, cfg.kl_coef, resume) == (6, 2, 1e-5, False, 0.1, True)
    cfg, resume = parse(["--no_progress", "--threads", "3"])
    assert (cfg.progress, cfg.threads, cfg.batch_size, resume) == (False, 3, 8, False)
    assert parse(["--rbr", "false"])[0].rbr is False and parse(["--rbr"])[0].rbr is True


def test_every_command_has_help(capsys):
    """Each command module registers its parser; `--help` of each lists its own options."""
    for cmd, option in (("grade", "--data"), ("eval-grader", "--out-dir"), ("train-grader", "--teacher"),
                        ("eval", "--k"), ("fit", "--anchor"), ("synth", "--filter"), ("relabel", "--mode"),
                        ("serve", "--max-batch"), ("demo", "--ppo-steps"), ("ppo", "--gradient-checkpointing"),
                        ("bench", "--sizes"), ("compile-check", "--arch")):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0 and option in capsys.readouterr().out, cmd
