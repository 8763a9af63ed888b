// Step caching for the FLUX transformer: one sample's memory of its previous denoising step, so that a step whose
// input barely changed can reuse the work of the blocks in the middle of the network instead of running them.
//
// The idea (first-block residual caching, as FBCache/DBCache): every step runs the first `head_blocks` blocks. The
// change those blocks make to the image tokens (their residual) is compared with the same residual at the last
// step that ran every block: when the relative L1 change is under `threshold`, the step adds the middle blocks'
// residual saved at that step instead of running them, then runs the last `tail_blocks` blocks as usual. The
// first `warmup_steps` and the last `final_steps` always run every block, and at most `max_consecutive` steps in a
// row reuse. Blocks count in execution order, double-stream blocks first, then single-stream ones; the state
// between blocks is the [txt; img] token matrix in both kinds, so a residual is one [L, hidden] matrix.
//
// A cache belongs to one sample of one request: its step counter and residuals must never see another sample's
// forward. Everything it decides is a deterministic function of the sample's own inputs.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/backend.h"

namespace fx::models {

class FluxTransformer;

struct StepCachePolicy {
  double threshold = 0.0;   // relative L1 change of the head residual under which a step reuses; 0: never reuse
  int32_t head_blocks = 1;  // blocks every step runs before the decision (>= 1)
  int32_t tail_blocks = 0;  // last blocks every step runs after the middle (>= 0)
  int32_t warmup_steps = 1;     // first steps that always run every block
  int32_t final_steps = 1;      // last steps (of total_steps) that always run every block
  int32_t max_consecutive = 3;  // the most steps in a row that reuse (>= 1)
  int32_t total_steps = 0;      // the steps this sample will run (>= 1)

  // Throws FX_ERR_INVALID_ARGUMENT naming the field that is out of range.
  void validate() const;
};

class FluxStepCache {
 public:
  explicit FluxStepCache(const StepCachePolicy& policy);

  const StepCachePolicy& policy() const { return policy_; }
  // Forgets every step: the next forward is step 0 of a new run (the residuals' memory is kept for reuse).
  void reset();

  int32_t step() const { return step_; }            // forwards seen since creation or reset
  int32_t reused_steps() const { return reused_; }  // of those, the ones that reused the middle
  double last_change() const { return last_change_; }  // the relative change measured at the last step (NaN: none)

  // ---- used by FluxTransformer::forward only ----
  // Whether this step may consider reusing at all (warm-up, final steps, the consecutive cap, an empty middle),
  // before anything is measured.
  bool may_reuse(int64_t total_blocks) const;
  // Binds the cache to the model and token counts of its first forward; throws FX_ERR_INVALID_ARGUMENT when a
  // later forward comes from another model or another shape. Allocates the middle residual once.
  void bind(const FluxTransformer& model, int64_t txt_tokens, int64_t img_tokens);
  // Decides from the head residual of this step (host copy, image rows): true to reuse. On a step that runs every
  // block the residual becomes the reference for the next decisions.
  bool decide(std::vector<float>& head_residual, bool may_reuse);
  // Ends the step: counts it and whether it reused.
  void finish_step(bool reused);

  // What a cache holds between steps: [L, H] on the backend and [Li, H] on the host (the reference below), i.e.
  // about 100 MiB per sample for a 1024x1024 image at FLUX.1's width; the forward's scratch is shared.
  backend::Tensor middle_residual;  // [L, H]: the middle blocks' change at the last step that ran them
  bool has_middle_residual = false;

 private:
  StepCachePolicy policy_;
  int32_t step_ = 0, reused_ = 0, consecutive_ = 0;
  double last_change_ = 0.0;
  std::vector<float> reference_;  // the head residual of the last step that ran every block (host)
  const FluxTransformer* model_ = nullptr;
  std::shared_ptr<backend::Backend> backend_;  // keeps the buffers' backend alive as long as the cache
  int64_t txt_tokens_ = 0, img_tokens_ = 0;
};

// Relative L1 change sum|a - b| / sum|b| in double (NaN when b is all zeros, or on a NaN): the measure the
// decision uses, exposed for its test.
double relative_l1_change(const std::vector<float>& current, const std::vector<float>& reference);

}  // namespace fx::models
