// Python bindings of the rbr_fast._C extension: each op's file binds its own kernels.
#include <pybind11/pybind11.h>

#include "advantages.h"
#include "decode.h"
#include "logprobs.h"
#include "reward.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "rbr_fast CPU kernels (validated inputs only: call them through rbr_fast.ops)";
  rbr_fast::bind_advantages(m);
  rbr_fast::bind_logprobs(m);
  rbr_fast::bind_reward(m);
  rbr_fast::bind_decode(m);
}
