#include "models/flux_step_cache.h"

#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"
#include "models/flux_transformer.h"

namespace fx::models {

void StepCachePolicy::validate() const {
  auto require = [](bool ok, const std::string& what) {
    if (!ok) fail(FX_ERR_INVALID_ARGUMENT, "FLUX step cache: " + what);
  };
  require(std::isfinite(threshold) && threshold >= 0.0, "threshold must be a finite number >= 0");
  require(head_blocks >= 1, "head_blocks must be >= 1 (the decision needs at least one block's residual)");
  require(tail_blocks >= 0, "tail_blocks must be >= 0");
  require(warmup_steps >= 0, "warmup_steps must be >= 0");
  require(final_steps >= 0, "final_steps must be >= 0");
  require(max_consecutive >= 1, "max_consecutive must be >= 1");
  require(total_steps >= 1, "total_steps must be >= 1");
}

FluxStepCache::FluxStepCache(const StepCachePolicy& policy) : policy_(policy) {
  policy_.validate();
  reset();
}

void FluxStepCache::reset() {
  step_ = reused_ = consecutive_ = 0;
  last_change_ = std::numeric_limits<double>::quiet_NaN();
  reference_.clear();
  has_middle_residual = false;
}

bool FluxStepCache::may_reuse(int64_t total_blocks) const {
  return policy_.threshold > 0.0 && has_middle_residual && !reference_.empty() &&
         policy_.head_blocks + policy_.tail_blocks < total_blocks && step_ >= policy_.warmup_steps &&
         step_ < policy_.total_steps - policy_.final_steps && consecutive_ < policy_.max_consecutive;
}

void FluxStepCache::bind(const FluxTransformer& model, int64_t txt_tokens, int64_t img_tokens) {
  if (model_ == nullptr) {
    model_ = &model;
    backend_ = model.shared_backend();
    txt_tokens_ = txt_tokens;
    img_tokens_ = img_tokens;
    const int64_t H = model.config().hidden, L = txt_tokens + img_tokens;
    middle_residual = backend_->alloc(DType::F32, {L, H});
    return;
  }
  if (model_ != &model)
    fail(FX_ERR_INVALID_ARGUMENT, "FLUX step cache: this cache belongs to another model (one cache per sample and model)");
  if (txt_tokens != txt_tokens_ || img_tokens != img_tokens_)
    fail(FX_ERR_INVALID_ARGUMENT, "FLUX step cache: bound to " + std::to_string(txt_tokens_) + " text and " +
                                      std::to_string(img_tokens_) + " image tokens, this forward has " +
                                      std::to_string(txt_tokens) + " and " + std::to_string(img_tokens) +
                                      " (one cache per sample)");
}

double relative_l1_change(const std::vector<float>& current, const std::vector<float>& reference) {
  if (current.size() != reference.size()) return std::numeric_limits<double>::quiet_NaN();
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < current.size(); ++i) {
    diff += std::fabs(static_cast<double>(current[i]) - reference[i]);
    norm += std::fabs(static_cast<double>(reference[i]));
  }
  return norm > 0.0 ? diff / norm : std::numeric_limits<double>::quiet_NaN();
}

bool FluxStepCache::decide(std::vector<float>& residual, bool may_reuse) {
  last_change_ = reference_.empty() ? std::numeric_limits<double>::quiet_NaN() : relative_l1_change(residual, reference_);
  // A NaN change (no reference, a zero reference, a NaN input) never passes the comparison: the step runs.
  const bool reuse = may_reuse && last_change_ < policy_.threshold;
  if (!reuse) reference_.swap(residual);
  return reuse;
}

void FluxStepCache::finish_step(bool reused) {
  ++step_;
  if (reused) {
    ++reused_;
    ++consecutive_;
  } else {
    consecutive_ = 0;
  }
}

}  // namespace fx::models
