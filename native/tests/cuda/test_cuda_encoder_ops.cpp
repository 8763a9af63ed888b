// The CUDA kernels of the autoencoder and the text encoders (ops/cuda: conv2d.cu, norm_groups.cu,
// encoder_ops.cu), each against the plain references of ops/cpu (or, for pure data movement, the same
// loop written out here), on random inputs that are never zero, in f32 and bf16. Every output region sits
// between NaN guards and starts as NaN (or as random prior values for the accumulating forms): a skipped
// element reads NaN, a write outside the region leaves a guard non-NaN, and NaN never passes. Inputs sit
// between NaN guards too, so a read outside the input (a padding tap fetched instead of zero-filled) turns
// the result into NaN. bf16 inputs are rounded on the host first, so the reference sees what the GPU sees.
// Tolerances (relative L2): f32 outputs 1e-5 (bf16 products are exact in f32, so the tensor-core
// convolution meets it too on bf16-rounded inputs), bf16 outputs 1e-2; data movement is bit-exact.
//
// CudaEncoderOps skips itself without a GPU; CudaEncoderOpArguments runs everywhere (argument errors come
// before CUDA is touched; without a GPU a launch is FX_ERR_BACKEND naming the kernel).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "cuda_test_support.h"
#include "ops/cpu/conv2d.h"
#include "ops/cuda/kernels.h"

namespace {

using fx::DType;
using namespace fx::cuda_test;

class CudaEncoderOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpu()) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  }
};

constexpr DType kActs[] = {DType::F32, DType::BF16};
double tolerance(DType out) { return out == DType::F32 ? 1e-5 : 1e-2; }

// ---------------------------------------------------------------------------------------------------
// conv2d

struct ConvCase {
  int64_t batch, cin, cout, h, w, k, stride, pad_top, pad_bottom, pad_left, pad_right;
};

std::string describe(const ConvCase& c) {
  return "batch " + std::to_string(c.batch) + " " + std::to_string(c.cin) + "->" + std::to_string(c.cout) + " " +
         std::to_string(c.h) + "x" + std::to_string(c.w) + " k" + std::to_string(c.k) + " s" + std::to_string(c.stride) +
         " pad " + std::to_string(c.pad_top) + std::to_string(c.pad_bottom) + std::to_string(c.pad_left) +
         std::to_string(c.pad_right);
}

void run_conv_case(const ConvCase& c, DType act, DType wdt, bool accumulate) {
  SCOPED_TRACE(describe(c) + " act " + name_of(act) + " weights " + name_of(wdt) + (accumulate ? " accumulate" : ""));
  fx::cpu::Conv2dShape s;
  s.in_channels = c.cin;
  s.out_channels = c.cout;
  s.height = c.h;
  s.width = c.w;
  s.kernel_h = s.kernel_w = c.k;
  s.stride = c.stride;
  s.pad_top = c.pad_top;
  s.pad_bottom = c.pad_bottom;
  s.pad_left = c.pad_left;
  s.pad_right = c.pad_right;
  const int64_t ho = s.out_height(), wo = s.out_width();
  const size_t x_count = size_t(c.batch * c.cin * c.h * c.w), y_count = size_t(c.batch * c.cout * ho * wo);

  // The tensor-core path rounds x to bf16 as it gathers it: the reference gets the same values.
  const DType x_round = wdt == DType::BF16 ? DType::BF16 : act;
  const std::vector<float> x = random_values(x_count, act);
  std::vector<float> x_ref = x;
  for (float& v : x_ref) v = round_to(x_round, v);
  const float wscale = 1.0f / std::sqrt(float(c.cin * c.k * c.k));
  const std::vector<float> w = random_values(size_t(c.cout * c.cin * c.k * c.k), DType::F32, 0.0f, wscale);
  std::vector<float> w_ref = w;
  for (float& v : w_ref) v = round_to(wdt, v);
  const std::vector<float> bias = random_values(size_t(c.cout));
  const std::vector<float> prior = accumulate ? random_values(y_count, act) : std::vector<float>(y_count, kNaN);

  std::vector<float> packed(size_t(fx::cuda::conv2d_packed_count(c.cout, c.cin, c.k, c.k)));
  fx::cuda::conv2d_pack_weights(w.data(), c.cout, c.cin, c.k, c.k, packed.data());
  const Guarded gx(x), gy(prior);
  DeviceArray dx(act, gx.host), dy(act, gy.host), dw(wdt, packed);
  const DeviceBytes dbias(bias);

  fx::cuda::Conv2dArgs a;
  a.act = act;
  a.x = dx.at(gx.guard);
  a.y = dy.at(gy.guard);
  a.weight_dtype = wdt;
  a.weight = dw.at(0);
  a.bias = dbias.as<const float>();
  a.batch = c.batch;
  a.in_channels = c.cin;
  a.out_channels = c.cout;
  a.height = c.h;
  a.width = c.w;
  a.kernel_h = a.kernel_w = c.k;
  a.stride = c.stride;
  a.pad_top = c.pad_top;
  a.pad_bottom = c.pad_bottom;
  a.pad_left = c.pad_left;
  a.pad_right = c.pad_right;
  a.accumulate = accumulate;
  ASSERT_EQ(a.out_height(), ho);
  ASSERT_EQ(a.out_width(), wo);
  fx::cuda::conv2d(a, nullptr);
  const std::vector<float> got = dy.download();

  std::vector<float> want = prior;
  fx::cpu::conv2d_reference(x_ref.data(), c.batch, s, w_ref.data(), bias.data(), fx::cpu::Activation::None, accumulate,
                            want.data());
  const double err = relative_l2(gy.view(got), want);
  EXPECT_LT(err, tolerance(act)) << "relative L2 " << err;
  EXPECT_EQ(gy.guards_written(got), 0u) << "elements outside the output were written";
}

// The autoencoder's geometries and channel counts that exercise the tiling: input channels below one
// chunk (3, 16, 40) and over it (64, 96, 128), output channels below, at and over a tile (3, 32, 64, 70, 96,
// 130), pixel counts that end mid-tile, a batch of two, stride 2 with the Downsample's right/bottom pad.
const ConvCase kConvCases[] = {
    {1, 3, 32, 17, 19, 3, 1, 1, 1, 1, 1},    // encoder conv_in
    {1, 64, 96, 20, 23, 3, 1, 1, 1, 1, 1},   // two chunks per tap, a partial output tile
    {2, 40, 70, 21, 18, 3, 2, 0, 1, 0, 1},   // Downsample, batch 2
    {1, 96, 64, 16, 16, 1, 1, 0, 0, 0, 0},   // 1×1 shortcut
    {1, 16, 130, 9, 7, 3, 1, 1, 1, 1, 1},    // decoder conv_in: 16 latent channels
    {1, 128, 3, 33, 35, 3, 1, 1, 1, 1, 1},   // decoder conv_out: 3 output channels
    {1, 32, 40, 12, 10, 3, 2, 1, 1, 1, 1},   // stride 2, symmetric pad
};

TEST_F(CudaEncoderOps, Conv2dF32MatchesTheReference) {
  for (const ConvCase& c : kConvCases)
    for (DType act : kActs)
      for (bool accumulate : {false, true}) run_conv_case(c, act, DType::F32, accumulate);
}

TEST_F(CudaEncoderOps, Conv2dTensorCoresMatchTheReference) {
  if (compute_major() < 8) GTEST_SKIP() << "bf16 tensor cores need sm_80";
  for (const ConvCase& c : kConvCases)
    for (DType act : kActs)
      for (bool accumulate : {false, true}) run_conv_case(c, act, DType::BF16, accumulate);
}

// A larger one: 128 -> 128 channels at 64×64 (many pixel tiles, four chunks per tap, every warp busy).
TEST_F(CudaEncoderOps, Conv2dAtAnAutoencoderWidth) {
  const ConvCase c{1, 128, 128, 64, 64, 3, 1, 1, 1, 1, 1};
  run_conv_case(c, DType::F32, DType::F32, true);
  if (compute_major() >= 8) run_conv_case(c, DType::BF16, DType::BF16, false);
}

// ---------------------------------------------------------------------------------------------------
// GroupNorm

struct NormCase {
  int64_t batch, channels, hw, groups;
};

void run_group_norm_case(const NormCase& c, DType act, bool silu, bool in_place, int64_t guard, float offset) {
  SCOPED_TRACE("batch " + std::to_string(c.batch) + " channels " + std::to_string(c.channels) + " hw " +
               std::to_string(c.hw) + " groups " + std::to_string(c.groups) + " " + name_of(act) +
               (silu ? " silu" : "") + (in_place ? " in place" : "") + " guard " + std::to_string(guard) +
               " offset " + std::to_string(offset));
  const size_t n = size_t(c.batch * c.channels * c.hw);
  const std::vector<float> x = random_values(n, act, offset);
  const std::vector<float> gamma = random_values(size_t(c.channels)), beta = random_values(size_t(c.channels));
  const Guarded gx(x, guard), gy(std::vector<float>(n, kNaN), guard);
  DeviceArray dx(act, gx.host), dy(act, gy.host);
  const DeviceBytes dgamma(gamma), dbeta(beta);
  DeviceBuffer workspace(fx::cuda::group_norm_workspace_bytes(c.batch, c.channels, c.hw, c.groups));
  void* out = in_place ? dx.at(gx.guard) : dy.at(gy.guard);
  fx::cuda::group_norm(act, dx.at(gx.guard), c.batch, c.channels, c.hw, c.groups, dgamma.as<const float>(),
                       dbeta.as<const float>(), 1e-6f, silu, out, workspace.get(), nullptr);
  const std::vector<float> got = in_place ? dx.download() : dy.download();
  std::vector<float> want(n);
  fx::cpu::group_norm_reference(x.data(), c.batch, c.channels, c.hw, c.groups, gamma.data(), beta.data(), 1e-6f, silu,
                                want.data());
  const Guarded& g = in_place ? gx : gy;
  const double err = relative_l2(g.view(got), want);
  EXPECT_LT(err, tolerance(act)) << "relative L2 " << err;
  EXPECT_EQ(g.guards_written(got), 0u) << "elements outside the output were written";
  if (!in_place) EXPECT_EQ(relative_l2(gx.view(dx.download()), x), 0.0) << "x changed";
}

// One chunk per group and several (4096 values a chunk): 4 channels × 4096 = 4 chunks; 16 × 4099 = 17 with
// a short last one; planes of 5 (hw odd, the scalar path) to 4099.
const NormCase kNormCases[] = {
    {1, 32, 323, 32}, {1, 128, 4096, 32}, {2, 64, 5, 32}, {1, 96, 1000, 32}, {1, 512, 4099, 32}, {2, 48, 64, 8},
};

TEST_F(CudaEncoderOps, GroupNormMatchesTheReference) {
  for (const NormCase& c : kNormCases)
    for (DType act : kActs)
      for (bool silu : {false, true}) {
        run_group_norm_case(c, act, silu, false, 0, 0.0f);    // 16-byte aligned: vector path where hw allows
        run_group_norm_case(c, act, silu, true, Guarded::kGuard, 0.0f);  // odd offset: scalar path, in place
      }
}

// A large common offset must not leak into the variance.
TEST_F(CudaEncoderOps, GroupNormKeepsPrecisionUnderALargeOffset) {
  for (const NormCase& c : {NormCase{1, 128, 4096, 32}, NormCase{1, 32, 1000, 32}})
    for (float offset : {300.0f, -2000.0f}) run_group_norm_case(c, DType::F32, true, false, 0, offset);
}

// ---------------------------------------------------------------------------------------------------
// Data movement

TEST_F(CudaEncoderOps, UpsampleNearest2xIsExact) {
  struct Case {
    int64_t planes, h, w;
  };
  for (const Case& c : {Case{5, 7, 9}, Case{64, 32, 33}, Case{3, 1, 300}, Case{2, 300, 1}})
    for (DType act : kActs) {
      SCOPED_TRACE(std::to_string(c.planes) + "x" + std::to_string(c.h) + "x" + std::to_string(c.w) + " " + name_of(act));
      const std::vector<float> x = random_values(size_t(c.planes * c.h * c.w), act);
      const Guarded gx(x), gy(std::vector<float>(x.size() * 4, kNaN));
      DeviceArray dx(act, gx.host), dy(act, gy.host);
      fx::cuda::upsample_nearest2x(act, dx.at(gx.guard), c.planes, c.h, c.w, dy.at(gy.guard), nullptr);
      const std::vector<float> got = dy.download();
      std::vector<float> want(x.size() * 4);
      fx::cpu::upsample_nearest2x_reference(x.data(), c.planes, c.h, c.w, want.data());
      EXPECT_EQ(gy.view(got), want);
      EXPECT_EQ(gy.guards_written(got), 0u);
    }
}

TEST_F(CudaEncoderOps, TransposeIsExactOnStridedMatrices) {
  struct Case {
    int64_t rows, cols, pad_src, pad_dst;
  };
  for (const Case& c : {Case{5, 54, 0, 0}, Case{130, 67, 3, 5}, Case{1000, 64, 0, 7}, Case{33, 1, 2, 0}, Case{1, 77, 1, 1}})
    for (DType act : kActs)
      for (bool accumulate : {false, true}) {
        SCOPED_TRACE(std::to_string(c.rows) + "x" + std::to_string(c.cols) + " " + name_of(act) +
                     (accumulate ? " +=" : ""));
        const int64_t lds = c.cols + c.pad_src, ldd = c.rows + c.pad_dst;
        // Source and destination with NaN in the gaps between rows.
        std::vector<float> src(size_t(c.rows * lds), kNaN), dst(size_t(c.cols * ldd), kNaN);
        for (int64_t r = 0; r < c.rows; ++r)
          for (int64_t q = 0; q < c.cols; ++q) src[size_t(r * lds + q)] = round_to(act, random_value());
        if (accumulate)
          for (int64_t q = 0; q < c.cols; ++q)
            for (int64_t r = 0; r < c.rows; ++r) dst[size_t(q * ldd + r)] = round_to(act, random_value());
        std::vector<float> want = dst;
        for (int64_t r = 0; r < c.rows; ++r)
          for (int64_t q = 0; q < c.cols; ++q) {
            float& o = want[size_t(q * ldd + r)];
            o = round_to(act, accumulate ? o + src[size_t(r * lds + q)] : src[size_t(r * lds + q)]);
          }
        const Guarded gs(src), gd(dst);
        DeviceArray ds(act, gs.host), dd(act, gd.host);
        fx::cuda::transpose(act, ds.at(gs.guard), c.rows, c.cols, lds, dd.at(gd.guard), ldd, accumulate, nullptr);
        const std::vector<float> got = dd.download();
        const std::vector<float> view = gd.view(got);
        size_t wrong = 0;
        for (size_t i = 0; i < want.size(); ++i)
          wrong += !(view[i] == want[i] || (std::isnan(view[i]) && std::isnan(want[i])));
        EXPECT_EQ(wrong, 0u) << "elements differ (or a gap between rows was written)";
        EXPECT_EQ(gd.guards_written(got), 0u);
      }
}

TEST_F(CudaEncoderOps, ScaleLatentsEqualsTheCpuArithmetic) {
  const double scale = 0.3611, shift = 0.1159;
  for (DType act : kActs)
    for (bool to_model : {true, false})
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(std::string(name_of(act)) + (to_model ? " to model" : " from model") + (in_place ? " in place" : ""));
        const std::vector<float> x = random_values(10007, act);
        const Guarded gx(x), gy(std::vector<float>(x.size(), kNaN));
        DeviceArray dx(act, gx.host), dy(act, gy.host);
        void* out = in_place ? dx.at(gx.guard) : dy.at(gy.guard);
        fx::cuda::scale_latents(act, dx.at(gx.guard), int64_t(x.size()), scale, shift, to_model, out, nullptr);
        const std::vector<float> got = in_place ? dx.download() : dy.download();
        std::vector<float> want(x.size());
        for (size_t i = 0; i < x.size(); ++i)  // backend/cpu_backend.cpp's formula, then the dtype's rounding
          want[i] = round_to(act, to_model ? float(double(x[i]) / scale + shift) : float(scale * (double(x[i]) - shift)));
        const Guarded& g = in_place ? gx : gy;
        EXPECT_EQ(g.view(got), want);
        EXPECT_EQ(g.guards_written(got), 0u);
      }
}

TEST_F(CudaEncoderOps, EmbeddingEqualsTheCpuConversion) {
  const int64_t vocab = 37, hidden = 300, count = 50, ld = hidden + 5;
  std::vector<int32_t> ids(static_cast<size_t>(count));
  for (int64_t r = 0; r < count; ++r) ids[size_t(r)] = int32_t(rng()() % vocab);
  ids[0] = 0;
  ids[1] = int32_t(vocab - 1);
  const DeviceBytes dids(ids);
  const std::vector<float> values = random_values(size_t(vocab * hidden));
  for (DType table_dtype : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3FN, DType::F8_E5M2, DType::F64}) {
    std::vector<uint8_t> table(values.size() * fx::dtype_size(table_dtype));
    fx::convert(DType::F32, values.data(), table_dtype, table.data(), values.size(), fx::Overflow::Saturate);
    std::vector<float> as_f32(values.size());
    fx::convert(table_dtype, table.data(), DType::F32, as_f32.data(), values.size(), fx::Overflow::Ieee);
    const DeviceBytes dtable(table);
    for (DType out : kActs) {
      SCOPED_TRACE(std::string("table ") + name_of(table_dtype) + " out " + name_of(out));
      const Guarded gout(std::vector<float>(size_t(count * ld), kNaN));
      DeviceArray dout(out, gout.host);
      fx::cuda::embedding(table_dtype, dtable.as<const void>(), hidden, dids.as<const int32_t>(), count, out,
                          dout.at(gout.guard), ld, nullptr);
      const std::vector<float> got = dout.download();
      const std::vector<float> view = gout.view(got);
      size_t wrong = 0, gaps_written = 0;
      for (int64_t r = 0; r < count; ++r)
        for (int64_t c = 0; c < ld; ++c) {
          const float g = view[size_t(r * ld + c)];
          if (c >= hidden) {
            gaps_written += !std::isnan(g);
            continue;
          }
          wrong += g != round_to(out, as_f32[size_t(ids[size_t(r)] * hidden + c)]);
        }
      EXPECT_EQ(wrong, 0u);
      EXPECT_EQ(gaps_written, 0u);
      EXPECT_EQ(gout.guards_written(got), 0u);
    }
  }
}

TEST_F(CudaEncoderOps, RelativePositionBiasIsExact) {
  const int64_t buckets = 32, heads = 7, L = 77;
  const std::vector<float> table = random_values(size_t(buckets * heads));
  std::vector<int32_t> bucket_of(size_t(2 * L - 1));
  for (int32_t& b : bucket_of) b = int32_t(rng()() % buckets);
  const DeviceBytes dtable(table), dbuckets(bucket_of);
  const std::vector<std::pair<int64_t, int64_t>> slices{{0, L}, {10, 30}, {76, 1}};
  for (const auto& [q0, rows] : slices) {
    SCOPED_TRACE("rows " + std::to_string(q0) + " + " + std::to_string(rows));
    const Guarded gout(std::vector<float>(size_t(heads * rows * L), kNaN));
    DeviceArray dout(DType::F32, gout.host);
    fx::cuda::relative_position_bias(dtable.as<const float>(), heads, dbuckets.as<const int32_t>(), q0, rows, L,
                                     static_cast<float*>(dout.at(gout.guard)), nullptr);
    const std::vector<float> got = dout.download();
    std::vector<float> want;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < L; ++j) want.push_back(table[size_t(bucket_of[size_t(j - (q0 + i) + L - 1)] * heads + h)]);
    EXPECT_EQ(gout.view(got), want);
    EXPECT_EQ(gout.guards_written(got), 0u);
  }
}

// ---------------------------------------------------------------------------------------------------
// Without a GPU (runs everywhere)

fx_status status_of(const std::function<void()>& call, std::string* message = nullptr) {
  try {
    call();
  } catch (const fx::Error& e) {
    if (message != nullptr) *message = e.what();
    return e.status();
  }
  return FX_OK;
}

fx::cuda::Conv2dArgs valid_conv(void* buffer) {
  fx::cuda::Conv2dArgs a;
  a.x = a.y = buffer;
  a.weight = buffer;
  a.in_channels = 2;
  a.out_channels = 2;
  a.height = a.width = 4;
  a.kernel_h = a.kernel_w = 3;
  a.pad_top = a.pad_bottom = a.pad_left = a.pad_right = 1;
  return a;
}

TEST(CudaEncoderOpArguments, BadArgumentsAreRejectedBeforeCudaIsTouched) {
  alignas(16) float dummy[64] = {};
  fx::cuda::Conv2dArgs a = valid_conv(dummy);
  a.act = DType::F16;
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_ERR_UNSUPPORTED);
  a = valid_conv(dummy);
  a.weight_dtype = DType::F8_E4M3FN;
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_ERR_UNSUPPORTED);
  a = valid_conv(dummy);
  a.stride = 0;
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_ERR_INVALID_ARGUMENT);
  a = valid_conv(dummy);
  a.pad_right = 3;  // not smaller than the kernel
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_ERR_INVALID_ARGUMENT);
  a = valid_conv(dummy);
  a.weight = reinterpret_cast<const uint8_t*>(dummy) + 4;  // packed weights must be 16-byte aligned
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_ERR_INVALID_ARGUMENT);
  a = valid_conv(dummy);
  a.batch = 0;  // nothing to do, with or without a GPU
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }), FX_OK);

  EXPECT_EQ(status_of([&] {
              fx::cuda::group_norm(DType::F32, dummy, 1, 30, 4, 32, dummy, dummy, 1e-6f, false, dummy, dummy, nullptr);
            }),
            FX_ERR_INVALID_ARGUMENT);  // 30 channels in 32 groups
  EXPECT_EQ(status_of([&] {
              fx::cuda::group_norm(DType::F16, dummy, 1, 32, 4, 32, dummy, dummy, 1e-6f, false, dummy, dummy, nullptr);
            }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] {
              fx::cuda::group_norm(DType::F32, dummy, 0, 32, 4, 32, dummy, dummy, 1e-6f, false, dummy, dummy, nullptr);
            }),
            FX_OK);
  EXPECT_EQ(fx::cuda::group_norm_workspace_bytes(1, 30, 4, 32), 0u);
  EXPECT_GT(fx::cuda::group_norm_workspace_bytes(1, 32, 4, 32), 0u);

  EXPECT_EQ(status_of([&] { fx::cuda::transpose(DType::F16, dummy, 2, 2, 2, dummy, 2, false, nullptr); }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] { fx::cuda::transpose(DType::F32, dummy, 2, 4, 3, dummy, 2, false, nullptr); }),
            FX_ERR_INVALID_ARGUMENT);  // lds < cols
  EXPECT_EQ(status_of([&] { fx::cuda::transpose(DType::F32, dummy, 0, 4, 4, dummy, 0, false, nullptr); }), FX_OK);
  EXPECT_EQ(status_of([&] { fx::cuda::upsample_nearest2x(DType::BF16, dummy, 1, 0, 4, dummy, nullptr); }),
            FX_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(status_of([&] { fx::cuda::scale_latents(DType::F32, dummy, 0, 1.0, 0.0, true, dummy, nullptr); }), FX_OK);
  int32_t ids[2] = {0, 1};
  EXPECT_EQ(status_of([&] { fx::cuda::embedding(DType::I32, dummy, 4, ids, 2, DType::F32, dummy, 4, nullptr); }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] { fx::cuda::embedding(DType::F32, dummy, 4, ids, 0, DType::F32, dummy, 4, nullptr); }), FX_OK);
  EXPECT_EQ(status_of([&] { fx::cuda::relative_position_bias(dummy, 2, ids, 3, 2, 4, dummy, nullptr); }),
            FX_ERR_INVALID_ARGUMENT);  // rows [3, 5) of 4
}

TEST(CudaEncoderOpArguments, WithoutAGpuALaunchIsABackendErrorNamingTheKernel) {
  if (have_gpu()) GTEST_SKIP() << "a GPU is present: launches succeed";
  alignas(16) float dummy[64] = {};
  std::string message;
  const fx::cuda::Conv2dArgs a = valid_conv(dummy);
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(a, nullptr); }, &message), FX_ERR_BACKEND);
  EXPECT_NE(message.find("conv2d"), std::string::npos) << message;
  fx::cuda::Conv2dArgs b = a;
  b.weight_dtype = DType::BF16;
  EXPECT_EQ(status_of([&] { fx::cuda::conv2d(b, nullptr); }, &message), FX_ERR_BACKEND);
  EXPECT_NE(message.find("conv2d"), std::string::npos) << message;
  EXPECT_EQ(status_of([&] {
              fx::cuda::group_norm(DType::F32, dummy, 1, 32, 1, 32, dummy, dummy, 1e-6f, true, dummy, dummy, nullptr);
            },
                      &message),
            FX_ERR_BACKEND);
  EXPECT_NE(message.find("group_norm"), std::string::npos) << message;
  EXPECT_EQ(status_of([&] { fx::cuda::upsample_nearest2x(DType::F32, dummy, 1, 2, 2, dummy, nullptr); }, &message),
            FX_ERR_BACKEND);
  EXPECT_NE(message.find("upsample_nearest2x"), std::string::npos) << message;
  EXPECT_EQ(status_of([&] { fx::cuda::transpose(DType::BF16, dummy, 2, 2, 2, dummy, 2, true, nullptr); }, &message),
            FX_ERR_BACKEND);
  EXPECT_NE(message.find("transpose"), std::string::npos) << message;
}

}  // namespace
