"""rbr_fast.ops: the kernel layer. Each op has a PyTorch reference, a C++ CPU kernel and a Triton
GPU kernel behind one dispatcher (see ``dispatch``); callers never name a backend.

Backend contract: every backend module (``reference``, ``cpp_backend``, ``triton_backend``) exposes
``NAME`` and the same functions, taking validated, contiguous, same-device tensors:

  gae(rewards, values, mask, gamma, lam) -> (adv, ret, flags)
  masked_whiten(x, mask, shift_mean, eps) -> (out, count, flags)
  shape_rewards(scores, logprobs, ref_logprobs, mask, kl_coef, kl_estimator) -> (rewards, flags)
  ppo_advantages(scores, logprobs, ref_logprobs, values, mask, kl_coef, kl_estimator,
                 gamma, lam, whiten, eps) -> (adv, ret, kl_row_sum, count, flags)

  yes_no_lse, label_logprobs, label_logprobs_backward: see reference.py, section "log-probs"
  rbr_reward(x, lit_idx, lit_neg, weights, rtype, bias) -> (reward, features, flags): section "reward"
  skinny_linear(x, weight, bias) -> x @ weight.T + bias for a few float32 rows (section "decode")

``flags`` is int32 ``[B]``: bit i set where the i-th per-token float input (in argument order) is
NaN/inf at a valid position of that row. ``count`` is the number of valid positions (int64 0-d).
"""
from .advantages import GAEOutput, PPOAdvantages, gae, masked_whiten, ppo_advantages, shape_rewards
from .dispatch import backend_name
from .decode import decode_linears, skinny_linear
from .reward import Conjunctions, RewardOutput, rbr_reward, rbr_reward_from_props
from .logprobs import YesNo, fused_linear_token_logprobs, fused_linear_yes_no, token_logprobs, yes_no_logprobs

__all__ = ["gae", "masked_whiten", "shape_rewards", "ppo_advantages", "GAEOutput", "PPOAdvantages",
           "yes_no_logprobs", "fused_linear_yes_no", "token_logprobs", "fused_linear_token_logprobs", "YesNo",
           "rbr_reward", "rbr_reward_from_props", "Conjunctions", "RewardOutput", "skinny_linear", "decode_linears",
           "backend_name"]
