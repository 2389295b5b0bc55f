// Advantage ops on CPU tensors; see rbr_fast/ops/__init__.py for the backend contract.
#pragma once
#include <ATen/ATen.h>
#include <pybind11/pybind11.h>

#include <optional>
#include <tuple>

namespace rbr_fast {

// Results: the outputs, the count of valid positions where there is one, and the per-row flag words
// (bits as in rbr_fast/ops/advantages/reference.py), or None when no row is flagged.
using Flags = std::optional<at::Tensor>;
using GaeResult = std::tuple<at::Tensor, at::Tensor, Flags>;                      // adv, ret, flags
using WhitenResult = std::tuple<at::Tensor, int64_t, Flags>;                      // out, count, flags
using ShapeResult = std::tuple<at::Tensor, Flags>;                                // rewards, flags
using PpoResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, int64_t, Flags>;  // adv, ret, kl, count, flags

GaeResult gae(const at::Tensor& rewards, const at::Tensor& values, const at::Tensor& mask, double gamma, double lam,
              const std::optional<at::Tensor>& adv_out, const std::optional<at::Tensor>& ret_out);
WhitenResult masked_whiten(const at::Tensor& x, const at::Tensor& mask, bool shift_mean, double eps);
ShapeResult shape_rewards(const at::Tensor& scores, const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                          const at::Tensor& mask, double kl_coef, int64_t kl_estimator);
PpoResult ppo_advantages(const at::Tensor& scores, const at::Tensor& logprobs, const at::Tensor& ref_logprobs,
                         const at::Tensor& values, const at::Tensor& mask, double kl_coef, int64_t kl_estimator,
                         double gamma, double lam, bool whiten, double eps, const std::optional<at::Tensor>& adv_out,
                         const std::optional<at::Tensor>& ret_out);

// Adds the functions above to the extension module (module.cpp calls it).
void bind_advantages(pybind11::module_& m);

}  // namespace rbr_fast
