// Python bindings of the rbr_fast._C extension. Every kernel file adds its functions here.
#include <torch/extension.h>

#include "advantages.h"
#include "decode.h"
#include "logprobs.h"
#include "reward.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rbr_fast CPU kernels (validated inputs only: call them through rbr_fast.ops)";
  m.def("gae", &rbr_fast::gae);
  m.def("masked_whiten", &rbr_fast::masked_whiten);
  m.def("shape_rewards", &rbr_fast::shape_rewards);
  m.def("ppo_advantages", &rbr_fast::ppo_advantages);
  m.def("yes_no_lse", &rbr_fast::yes_no_lse);
  m.def("label_logprobs", &rbr_fast::label_logprobs);
  m.def("label_logprobs_backward", &rbr_fast::label_logprobs_backward);
  m.def("rbr_reward", &rbr_fast::rbr_reward);
  m.def("skinny_linear", &rbr_fast::skinny_linear);
}
