// The RBR reward on CPU tensors: conjunction features then the per-response-type linear reward;
// see the contract in rbr_fast/ops/reference.py (section "reward").
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace rbr_fast {

std::vector<at::Tensor> rbr_reward(const at::Tensor& x, const at::Tensor& lit_idx, const at::Tensor& lit_neg,
                                   const at::Tensor& weights, const at::Tensor& rtype, const at::Tensor& bias);

}  // namespace rbr_fast
