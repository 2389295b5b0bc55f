"""rbr_fast.ops: the kernel layer, one package per op. Each has a PyTorch reference, a C++ CPU kernel
and a Triton GPU kernel behind one dispatcher (``dispatch``); callers never name a backend.

Layout (``csrc/<op>.cpp`` holds the op's C++ kernels and their pybind11 binding):

  <op>/__init__.py   the public functions: validate the inputs (``validate``), run the backend
                     ``dispatch.backend_for(device, "<op>")``, raise on the kernel's flags
  <op>/reference.py  plain PyTorch: the readable definition and the last-resort backend
  <op>/cpp.py        thin wrappers over ``rbr_fast._C`` (loaded or compiled by ``extension``)
  <op>/triton.py     the Triton kernels and their launchers

Backend contract: each op's three backend modules expose ``NAME`` ('ref', 'cpp', 'triton') and the
same functions, taking validated, contiguous, same-device tensors:

  advantages  gae(rewards, values, mask, gamma, lam) -> (adv, ret, flags)
              masked_whiten(x, mask, shift_mean, eps) -> (out, count, flags)
              shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator) -> (rewards, flags)
              ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator,
                             gamma, lam, whiten, eps) -> (adv, ret, kl_row_sum, count, flags)
  logprobs    yes_no_lse(logits, yes_ids, no_ids) -> (lse_all, lse_yes, lse_no, flags)
              label_logprobs(logits, labels, inv_temp, ignore_index) -> (logp, lse, entropy, flags)
              label_logprobs_backward(grad, logits, labels, lse, inv_temp, ignore_index) -> grad_logits
  reward      rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias) -> (reward, features, flags)
  decode      skinny_linear(x, weight, bias) -> x @ weight.T + bias for a few float32 rows
              (the Triton backend is ``F.linear``: cuBLAS GEMV is at memory bandwidth already)

``flags`` is int32, one word per row; the bits are listed in each op's ``reference.py`` (for the
advantage ops: bit i set where the i-th per-token float input, in argument order, is NaN/inf at a
valid position of that row, and the next bit where the row's score is NaN/inf). ``count`` is the
number of valid positions (int64 0-d). A CPU backend may hand back what it has summed up already:
``flags`` None when no row is flagged and ``count`` a Python int, so the op reads nothing back.
"""
from .advantages import GAEOutput, PPOAdvantages, gae, masked_whiten, ppo_advantages, release_buffers, shape_rewards
from .dispatch import backend_name
from .decode import decode_linears, skinny_linear
from .reward import Conjunctions, RewardOutput, rbr_reward, rbr_reward_from_props
from .logprobs import YesNo, fused_linear_token_logprobs, fused_linear_yes_no, token_logprobs, yes_no_logprobs

__all__ = ["gae", "masked_whiten", "shape_rewards", "ppo_advantages", "GAEOutput", "PPOAdvantages",
           "yes_no_logprobs", "fused_linear_yes_no", "token_logprobs", "fused_linear_token_logprobs", "YesNo",
           "rbr_reward", "rbr_reward_from_props", "Conjunctions", "RewardOutput", "skinny_linear", "decode_linears",
           "backend_name", "release_buffers"]
