// Builds without CUDA (SP_CUDA=OFF): the device planner of device_planner.h exists so callers
// compile everywhere; constructing one throws.
#include "shareprefill/device_planner.h"
#include "shareprefill/error.h"

namespace sp {

struct device_planner::impl {};

device_planner::device_planner(const planner_params&, int64_t, int64_t, const cluster_map*) {
  fail("device_planner", "built without CUDA");
}
device_planner::~device_planner() = default;
device_planner::device_planner(device_planner&&) noexcept = default;
device_planner& device_planner::operator=(device_planner&&) noexcept = default;

int64_t device_planner::workspace_bytes(const layer_shape&) const {
  fail("device_planner::workspace_bytes", "built without CUDA");
}
int64_t device_planner::state_bytes(int64_t, pivot_publishing, int64_t) const {
  fail("device_planner::state_bytes", "built without CUDA");
}
int64_t device_planner::max_pivots() const { fail("device_planner::max_pivots", "built without CUDA"); }
void device_planner::begin_prompt(device_plan_state&, void*, int64_t, int64_t, void*,
                                  pivot_publishing) const {
  fail("device_planner::begin_prompt", "built without CUDA");
}
void device_planner::begin_chunk(device_plan_state&, int64_t, void*) const {
  fail("device_planner::begin_chunk", "built without CUDA");
}
device_plan_output device_planner::plan(int64_t, const tensor_view&, const tensor_view&,
                                        device_plan_state&, void*, int64_t, void*) const {
  fail("device_planner::plan", "built without CUDA");
}
device_plan_output device_planner::plan_chunk(int64_t, int64_t, const tensor_view&,
                                              const tensor_view&, device_plan_state&, void*,
                                              int64_t, void*) const {
  fail("device_planner::plan_chunk", "built without CUDA");
}
void device_planner::publish(int64_t, const device_plan_output&, device_plan_state&, void*) const {
  fail("device_planner::publish", "built without CUDA");
}
const planner_params& device_planner::params() const {
  fail("device_planner::params", "built without CUDA");
}
int64_t device_planner::layers() const { fail("device_planner::layers", "built without CUDA"); }
int64_t device_planner::heads() const { fail("device_planner::heads", "built without CUDA"); }
std::vector<device_cluster_slot> device_planner::download_state(const device_plan_state&) const {
  fail("device_planner::download_state", "built without CUDA");
}
block_mask device_planner::download_mask(const layer_plan_view&) {
  fail("device_planner::download_mask", "built without CUDA");
}
std::vector<head_kind> device_planner::download_kinds(const layer_plan_view&) {
  fail("device_planner::download_kinds", "built without CUDA");
}
void device_plan_check(const device_plan_state&, void*) {
  fail("device_plan_check", "built without CUDA");
}

}  // namespace sp
