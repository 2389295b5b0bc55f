"""The grader's memory cap (``Grader(memory_gib=...)``, ``grading.memory``): passes sized to fit,
the same grades as without a cap, long conversations cut with one warning, a cap too small refused,
and the estimate bounding the activations the CPU profiler measures."""
import math
import warnings

import pytest
import torch

from rbr_fast.bench import tiny_lm
from rbr_fast.bench.harness import tensor_peak_bytes
from rbr_fast.grading import Grader, memory
from rbr_fast.integrations.lazy_reward import LazyReward

GiB = memory.GiB
CONVS = ["How do I bake bread?", "How do I make a pipe bomb?", "Tell me a story. " * 60, "?"]
COMPS = ["Flour, water, salt and yeast.", "I'm sorry, but I can't help with that.", "Once upon a time " * 30, ""]


@pytest.fixture(scope="module")
def model():
    return tiny_lm.model(layers=2, hidden=128, heads=4, kv_heads=2)


def cap_for(model, tokens: int, longest_row: int = 4096) -> float:
    """A cap (GiB) that holds a pass of about ``tokens`` tokens of the tiny model (rows up to ``longest_row``)."""
    a = memory.token_bytes(model.config, torch.float32, 0, 0)
    c = memory.token_bytes(model.config, torch.float32, 0, 1) - a
    return (memory.weight_bytes(model) + memory.RESERVE + tokens * (a + c * min(tokens, longest_row))) / GiB


def test_budget_solves_the_mask_quadratic(model):
    """A pass of B tokens in rows up to T <= B tokens costs B (a + c T), c the attention mask's bytes per
    grid element: the budget is the largest B that fits, or with rows of at most ``longest_row``."""
    a = memory.token_bytes(model.config, torch.float32, 1, 0)
    c = memory.token_bytes(model.config, torch.float32, 1, 1) - a
    assert c == memory.MARGIN * (1 + 2 * 4)  # SDPA: the boolean mask, its float32 copy, a padded copy
    room = lambda cap: cap * GiB - memory.weight_bytes(model) - memory.RESERVE  # noqa: E731
    for cap in (0.07, 0.1, 0.5):
        b = memory.token_budget(model, cap, 1, 1 << 20)
        assert b * (a + c * b) <= room(cap) < (b + 2) * (a + c * (b + 2))
        short = memory.token_budget(model, cap, 1, 300)  # rows no longer than 300 tokens
        assert short >= b and short == int(room(cap) / (a + c * 300))


def test_capped_grader_sizes_its_passes_and_grades_the_same(model):
    free = Grader(model, tiny_lm.tokenizer(), progress=False)
    want = free.grade(CONVS, COMPS)
    cap = cap_for(model, 9000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # room for the longest row: nothing is cut
        capped = Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap)
    extra = sum(len(capped._reply.tail(n)) for n in capped._reply.props) - capped._reply.longest
    assert capped.token_budget == memory.token_budget(model, cap, 0, 4096 + extra) > 4096 + extra
    assert capped.max_length == free.max_length == 4096
    capped.token_budget = free.token_budget = 700  # several passes each
    got = capped.grade(CONVS, COMPS)
    torch.testing.assert_close(got.p_yes, want.p_yes, atol=2e-5, rtol=0)
    torch.testing.assert_close(got.mass, want.mass, atol=2e-5, rtol=0)
    # a token_budget given beside the cap is kept when it is the smaller
    assert Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap, token_budget=500).token_budget == 500


def test_cap_below_the_longest_row_cuts_conversations_with_one_warning(model):
    cap = cap_for(model, 1500)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        g = Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap)
    msgs = [str(w.message) for w in seen]
    assert len(msgs) == 1 and f"holds {g.token_budget} tokens per pass" in msgs[0], msgs
    assert f"conversations are cut to max_length={g.max_length} tokens (was 4096)" in msgs[0]
    # the longest packed row (prefix + every question's tail) fits one pass
    extra = sum(len(g._reply.tail(n)) for n in g._reply.props) - g._reply.longest
    assert g.max_length + extra <= g.token_budget
    long_conv = "Tell me everything. " * 800
    with pytest.warns(UserWarning, match="cut from the left"):
        out = g.grade([long_conv], ["Sure."])
    assert out.p_yes.shape == (1, len(g.spec.propositions)) and g.truncated == 1


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2", True])
def test_bad_caps_are_refused_by_name(model, bad):
    with pytest.raises(ValueError, match="memory_gib must be a positive number of GiB"):
        Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=bad)
    with pytest.raises(ValueError, match="memory_gib must be a positive number of GiB"):
        LazyReward(memory_gib=bad)  # checked where an adapter is made, before any model loads


def test_a_cap_the_weights_fill_is_refused(model):
    cap = (memory.weight_bytes(model) + memory.RESERVE) / GiB
    with pytest.raises(ValueError, match=r"leaves no room for activations: the grader's weights take 0\.00 GiB"):
        Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap)


def test_cap_too_small_for_one_conversation_with_its_questions_is_refused(model):
    """Every question asked of one row (no trained heads): a cap holding 300 tokens cannot take them."""
    with pytest.raises(ValueError, match="too few for one short conversation with its questions"):
        Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap_for(model, 300))


def test_estimate_bounds_the_measured_activations(model):
    """The CPU profiler's memory timeline while a capped grader grades rows as long as its passes:
    weights + measured activations stay under the cap."""
    cap = cap_for(model, 2500)
    with pytest.warns(UserWarning, match="conversations are cut"):
        g = Grader(model, tiny_lm.tokenizer(), progress=False, memory_gib=cap)
    convs = ["Write about dragons and their hoards. " * (40 + 7 * i) for i in range(8)]
    comps = ["Once upon a time there was a dragon. " * (20 + 3 * i) for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.grade(convs[:1], comps[:1])
        activations = tensor_peak_bytes(lambda: g.grade(convs, comps), torch.device("cpu"))
    print(f"cap {cap * GiB / 2**20:.1f} MiB: weights {memory.weight_bytes(model) / 2**20:.1f} + measured activations "
          f"{activations / 2**20:.1f} MiB")
    assert activations > 0.2 * (cap * GiB - memory.weight_bytes(model) - memory.RESERVE)  # the passes were full
    assert memory.weight_bytes(model) + activations <= cap * GiB


def test_passes_sized_for_flex_attention_fit_after_a_fallback_to_sdpa(monkeypatch):
    """FlexAttention's block mask is built over the whole grid and costs more per element than SDPA's
    dense mask, so passes sized for it stay within the cap where the grader falls back to SDPA."""
    from rbr_fast.grading import packing
    m = tiny_lm.model(layers=2, hidden=128, heads=4, kv_heads=2)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert memory.mask_bytes("flex_attention", dtype) >= memory.mask_bytes("sdpa", dtype)
    cap = cap_for(m, 2500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdpa_budget = Grader(m, tiny_lm.tokenizer(), progress=False, memory_gib=cap).token_budget
        m.set_attn_implementation("flex_attention")
        flex = Grader(m, tiny_lm.tokenizer(), progress=False, memory_gib=cap)
    assert flex.token_budget < sdpa_budget
    before = (flex.token_budget, flex.max_length)

    def broken(self, device):
        raise RuntimeError("no FlexAttention kernel for this device")
    monkeypatch.setattr(packing.Packed, "block_mask", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        flex.grade(CONVS[:2], COMPS[:2])
    assert m.config._attn_implementation == "sdpa" and (flex.token_budget, flex.max_length) == before
