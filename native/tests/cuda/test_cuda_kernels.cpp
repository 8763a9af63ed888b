// The CUDA kernels of ops/cuda/kernels.h, each against the plain references of ops/cpu, on random
// inputs (never zeros), in f32 and bf16, on strided views of two kinds: 16-byte-aligned rows (the
// vector paths) and rows at an odd offset with an odd stride (the scalar paths). Every device buffer
// is poisoned with NaN first, so an element a kernel skipped reads NaN, and the gaps between rows
// (and before the view) must still be NaN afterwards: a kernel that writes outside its view fails.
// bf16 inputs are rounded to bf16 on the host first, so the reference sees the values the GPU sees;
// tolerances (relative L2 over the view): f32 1e-5, bf16 1e-2.
//
// CudaKernels skips itself without a GPU; CudaKernelArguments runs everywhere (argument errors are
// found before CUDA is touched, and without a GPU a launch is an FX_ERR_BACKEND naming the kernel).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/elementwise.h"
#include "ops/cuda/convert.h"
#include "ops/cuda/kernels.h"
#include "cuda_test_support.h"

namespace {

using fx::DType;

using fx::cuda_test::kNaN;
constexpr float kInf = std::numeric_limits<float>::infinity();

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (fx::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device (or no driver) on this machine";
  }
};

const char* name_of(DType d) { return d == DType::F32 ? "f32" : "bf16"; }
double tolerance(DType d) { return d == DType::F32 ? 1e-5 : 1e-2; }

// ---- device memory: the shared helpers (cuda_test_support.h) ----

using fx::cuda_test::cuda_ok;
using fx::cuda_test::DeviceArray;
using fx::cuda_test::DeviceBuffer;

// f32 parameters (shift, scale, tables, bias) on the device, at an element offset.
struct DeviceFloats {
  DeviceBuffer buffer;
  int64_t offset;
  DeviceFloats(const std::vector<float>& values, int64_t offset_elems)
      : buffer((values.size() + size_t(offset_elems)) * sizeof(float)), offset(offset_elems) {
    std::vector<float> padded(size_t(offset_elems), kNaN);
    padded.insert(padded.end(), values.begin(), values.end());
    cuda_ok(cudaMemcpy(buffer.get(), padded.data(), padded.size() * sizeof(float), cudaMemcpyHostToDevice),
            "cudaMemcpy to the device");
  }
  const float* get() const { return static_cast<const float*>(buffer.get()) + offset; }
};

// ---- views ----

// A [rows, cols] view inside a buffer: element (r, c) at offset + r·ld + c.
struct View {
  int64_t rows, cols, ld, offset;
  size_t size() const { return size_t(offset + rows * ld); }
  size_t index(int64_t r, int64_t c) const { return size_t(offset + r * ld + c); }
};

enum class Layout { Aligned, Odd };
const char* name_of(Layout l) { return l == Layout::Aligned ? "aligned" : "odd"; }

// Aligned: 16-byte rows for f32 and bf16 (ld a multiple of 8) with a gap after each row. Odd: the
// view starts one element in and rows are cols + 3 apart, so no row is 16-byte aligned.
View make_view(int64_t rows, int64_t cols, Layout layout) {
  if (layout == Layout::Aligned) return View{rows, cols, (cols + 7) / 8 * 8 + 8, 0};
  return View{rows, cols, cols + 3, 1};
}

std::mt19937_64& rng() {
  static std::mt19937_64 engine(20240607);
  return engine;
}

// Uniform magnitude in [0.1, 2], random sign: never zero.
float random_value() {
  std::uniform_real_distribution<float> magnitude(0.1f, 2.0f);
  const float v = magnitude(rng());
  return (rng()() & 1) ? v : -v;
}

std::vector<float> random_vector(size_t n, float offset = 0.0f) {
  std::vector<float> v(n);
  for (float& x : v) x = offset + random_value();
  return v;
}

float round_to(DType dtype, float v) { return dtype == DType::BF16 ? fx::bf16_to_f32(fx::f32_to_bf16(v)) : v; }

// A buffer for `view`: NaN everywhere, random values (plus `offset`, rounded to `dtype`) in the view.
std::vector<float> random_matrix(const View& view, DType dtype, float offset = 0.0f) {
  std::vector<float> host(view.size(), kNaN);
  for (int64_t r = 0; r < view.rows; ++r)
    for (int64_t c = 0; c < view.cols; ++c) host[view.index(r, c)] = round_to(dtype, offset + random_value());
  return host;
}

// The view's elements, row-major and contiguous.
std::vector<float> gather(const std::vector<float>& buffer, const View& view) {
  std::vector<float> out;
  out.reserve(size_t(view.rows * view.cols));
  for (int64_t r = 0; r < view.rows; ++r)
    for (int64_t c = 0; c < view.cols; ++c) out.push_back(buffer[view.index(r, c)]);
  return out;
}

double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  if (den == 0.0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// The view of `got` is within `tol` of `want` (relative L2), and everything outside the view is NaN.
void expect_view(const std::vector<float>& got, const View& view, const std::vector<float>& want, double tol,
                 const std::string& what) {
  const std::vector<float> in_view = gather(got, view);
  const double err = relative_l2(in_view, want);
  EXPECT_LT(err, tol) << what << ": relative L2 " << err;  // a NaN error (a skipped element) fails too
  size_t written_outside = 0;
  std::vector<bool> inside(got.size(), false);
  for (int64_t r = 0; r < view.rows; ++r)
    for (int64_t c = 0; c < view.cols; ++c) inside[view.index(r, c)] = true;
  for (size_t i = 0; i < got.size(); ++i)
    if (!inside[i] && !std::isnan(got[i])) ++written_outside;
  EXPECT_EQ(written_outside, 0u) << what << ": elements outside the view were written";
}

std::string describe(DType dtype, Layout layout, int64_t rows, int64_t cols) {
  return std::string(name_of(dtype)) + " " + name_of(layout) + " [" + std::to_string(rows) + ", " +
         std::to_string(cols) + "]";
}

constexpr DType kActs[] = {DType::F32, DType::BF16};
constexpr Layout kLayouts[] = {Layout::Aligned, Layout::Odd};

// ---------------------------------------------------------------------------------------------------
// Row norms

enum class Norm { Modulate, Affine, Rms, RmsInPlace };

void run_norm_case(Norm norm, DType dtype, Layout layout, int64_t rows, int64_t cols, float offset) {
  const float eps = 1e-6f;
  const View xv = make_view(rows, cols, layout);
  const View yv = layout == Layout::Aligned ? View{rows, cols, xv.ld + 8, 0} : View{rows, cols, cols + 5, 3};
  const std::vector<float> x = random_matrix(xv, dtype, offset);
  const std::vector<float> p0 = random_vector(size_t(cols)), p1 = random_vector(size_t(cols));
  // Parameters at an odd offset on the odd layout: the scalar path for them too.
  const int64_t param_offset = layout == Layout::Aligned ? 0 : 1;
  DeviceFloats d0(p0, param_offset), d1(p1, param_offset);
  DeviceArray dx(dtype, x);
  DeviceArray dy(dtype, std::vector<float>(yv.size(), kNaN));

  const std::vector<float> xc = gather(x, xv);
  std::vector<float> want(xc.size());
  const std::string what = describe(dtype, layout, rows, cols) + " offset " + std::to_string(offset);
  switch (norm) {
    case Norm::Modulate:
      fx::cpu::layernorm_modulate_reference(xc.data(), rows, cols, cols, p0.data(), p1.data(), eps, want.data(), cols);
      fx::cuda::layernorm_modulate(dtype, dx.at(xv.offset), rows, cols, xv.ld, d0.get(), d1.get(), eps,
                                   dy.at(yv.offset), yv.ld, nullptr);
      break;
    case Norm::Affine:
      fx::cpu::layernorm_affine_reference(xc.data(), rows, cols, cols, p0.data(), p1.data(), eps, want.data(), cols);
      fx::cuda::layernorm_affine(dtype, dx.at(xv.offset), rows, cols, xv.ld, d0.get(), d1.get(), eps,
                                 dy.at(yv.offset), yv.ld, nullptr);
      break;
    case Norm::Rms:
      fx::cpu::rms_norm_reference(xc.data(), rows, cols, cols, p0.data(), eps, want.data(), cols);
      fx::cuda::rms_norm(dtype, dx.at(xv.offset), rows, cols, xv.ld, d0.get(), eps, dy.at(yv.offset), yv.ld, nullptr);
      break;
    case Norm::RmsInPlace:
      fx::cpu::rms_norm_reference(xc.data(), rows, cols, cols, p0.data(), eps, want.data(), cols);
      fx::cuda::rms_norm(dtype, dx.at(xv.offset), rows, cols, xv.ld, d0.get(), eps, dx.at(xv.offset), xv.ld, nullptr);
      expect_view(dx.download(), xv, want, tolerance(dtype), what + " in place");
      return;
  }
  expect_view(dy.download(), yv, want, tolerance(dtype), what);
  // The input is untouched.
  EXPECT_EQ(relative_l2(gather(dx.download(), xv), xc), 0.0) << what << ": x changed";
}

// Warp per row (13, 40, 1000), block per row with registers (3072, 5000), block per row re-reading
// global memory (20000: more chunks than 512 threads × 4 hold).
constexpr int64_t kNormCols[] = {13, 40, 1000, 3072, 5000, 20000};

void run_norm(Norm norm) {
  for (DType dtype : kActs)
    for (Layout layout : kLayouts)
      for (int64_t cols : kNormCols) run_norm_case(norm, dtype, layout, cols >= 5000 ? 3 : 7, cols, 0.5f);
}

TEST_F(CudaKernels, LayerNormModulateMatchesTheReference) { run_norm(Norm::Modulate); }
TEST_F(CudaKernels, LayerNormAffineMatchesTheReference) { run_norm(Norm::Affine); }
TEST_F(CudaKernels, RmsNormMatchesTheReference) { run_norm(Norm::Rms); }
TEST_F(CudaKernels, RmsNormInPlaceMatchesTheReference) { run_norm(Norm::RmsInPlace); }

// Hidden states with a large common offset: the statistics must not lose the centred values.
TEST_F(CudaKernels, LayerNormKeepsPrecisionUnderALargeOffset) {
  for (Layout layout : kLayouts)
    for (int64_t cols : {int64_t(1000), int64_t(3072), int64_t(20000)}) {
      run_norm_case(Norm::Modulate, DType::F32, layout, 4, cols, 1000.0f);
      run_norm_case(Norm::Affine, DType::F32, layout, 4, cols, -3000.0f);
    }
}

TEST_F(CudaKernels, RmsNormHeadsMatchesTheReference) {
  const float eps = 1e-6f;
  for (DType dtype : kActs)
    for (Layout layout : kLayouts)
      for (int64_t head_dim : {int64_t(128), int64_t(64), int64_t(24), int64_t(10), int64_t(2000)}) {
        const int64_t heads = 3, rows = 9;
        const View xv = make_view(rows, heads * head_dim, layout);
        const std::vector<float> x = random_matrix(xv, dtype);
        const std::vector<float> w = random_vector(size_t(head_dim));
        DeviceFloats dw(w, layout == Layout::Aligned ? 0 : 1);
        DeviceArray dx(dtype, x);
        std::vector<float> want = gather(x, xv);
        fx::cpu::rms_norm_heads_reference(want.data(), rows, heads * head_dim, heads, head_dim, w.data(), eps);
        fx::cuda::rms_norm_heads(dtype, dx.at(xv.offset), rows, xv.ld, heads, head_dim, dw.get(), eps, nullptr);
        expect_view(dx.download(), xv, want, tolerance(dtype),
                    describe(dtype, layout, rows, heads * head_dim) + " head_dim " + std::to_string(head_dim));
      }
}

// ---------------------------------------------------------------------------------------------------
// RoPE

TEST_F(CudaKernels, RopeApplyMatchesTheReference) {
  std::uniform_real_distribution<float> angle(-3.1f, 3.1f);
  for (DType dtype : kActs)
    for (Layout layout : kLayouts)
      for (int64_t head_dim : {int64_t(128), int64_t(64), int64_t(24), int64_t(6)}) {
        const int64_t heads = 3, rows = 11, pairs = head_dim / 2;
        const View xv = make_view(rows, heads * head_dim, layout);
        const std::vector<float> x = random_matrix(xv, dtype);
        std::vector<float> cos_t(size_t(rows * pairs)), sin_t(cos_t.size());
        for (size_t i = 0; i < cos_t.size(); ++i) {
          const float a = angle(rng());
          cos_t[i] = std::cos(a);
          sin_t[i] = std::sin(a);
        }
        const int64_t table_offset = layout == Layout::Aligned ? 0 : 1;
        DeviceFloats dc(cos_t, table_offset), ds(sin_t, table_offset);
        DeviceArray dx(dtype, x);
        std::vector<float> want = gather(x, xv);
        fx::cpu::rope_apply_reference(want.data(), rows, heads * head_dim, heads, head_dim, cos_t.data(), sin_t.data());
        fx::cuda::rope_apply(dtype, dx.at(xv.offset), rows, xv.ld, heads, head_dim, dc.get(), ds.get(), nullptr);
        expect_view(dx.download(), xv, want, tolerance(dtype),
                    describe(dtype, layout, rows, heads * head_dim) + " head_dim " + std::to_string(head_dim));
      }
}

// ---------------------------------------------------------------------------------------------------
// Pointwise

constexpr int64_t kPointwiseCols[] = {3072, 77, 5};

TEST_F(CudaKernels, GatedAddMatchesTheReference) {
  for (DType dtype : kActs)
    for (Layout layout : kLayouts)
      for (int64_t cols : kPointwiseCols) {
        const int64_t rows = 13;
        const View xv = make_view(rows, cols, layout);
        const View yv = layout == Layout::Aligned ? View{rows, cols, xv.ld + 16, 0} : View{rows, cols, cols + 1, 5};
        const std::vector<float> x = random_matrix(xv, dtype), y = random_matrix(yv, dtype);
        const std::vector<float> gate = random_vector(size_t(cols));
        DeviceFloats dg(gate, layout == Layout::Aligned ? 0 : 3);
        DeviceArray dx(dtype, x), dy(dtype, y);
        std::vector<float> want = gather(x, xv);
        const std::vector<float> yc = gather(y, yv);
        fx::cpu::gated_add_reference(want.data(), rows, cols, cols, gate.data(), yc.data(), cols);
        fx::cuda::gated_add(dtype, dx.at(xv.offset), rows, cols, xv.ld, dg.get(), dy.at(yv.offset), yv.ld, nullptr);
        expect_view(dx.download(), xv, want, tolerance(dtype), describe(dtype, layout, rows, cols));
      }
}

TEST_F(CudaKernels, BinaryAddAndMulMatchTheReference) {
  for (fx::cuda::Binary op : {fx::cuda::Binary::Add, fx::cuda::Binary::Mul})
    for (DType dtype : kActs)
      for (Layout layout : kLayouts)
        for (int64_t cols : kPointwiseCols) {
          const int64_t rows = 13;
          const View xv = make_view(rows, cols, layout);
          const View yv = layout == Layout::Aligned ? View{rows, cols, cols + 24 - cols % 8, 0} : View{rows, cols, cols + 2, 7};
          const std::vector<float> x = random_matrix(xv, dtype), y = random_matrix(yv, dtype);
          DeviceArray dx(dtype, x), dy(dtype, y);
          std::vector<float> want = gather(x, xv);
          const std::vector<float> yc = gather(y, yv);
          if (op == fx::cuda::Binary::Add) {
            fx::cpu::add_inplace_reference(want.data(), yc.data(), int64_t(want.size()));
          } else {
            fx::cpu::mul_inplace_reference(want.data(), yc.data(), int64_t(want.size()));
          }
          fx::cuda::binary(op, dtype, dx.at(xv.offset), rows, cols, xv.ld, dy.at(yv.offset), yv.ld, nullptr);
          expect_view(dx.download(), xv, want, tolerance(dtype),
                      describe(dtype, layout, rows, cols) + (op == fx::cuda::Binary::Add ? " add" : " mul"));
        }
}

// Wider inputs for the activations (their interesting range is a few units around 0).
std::vector<float> activation_inputs(const View& view, DType dtype) {
  std::vector<float> host(view.size(), kNaN);
  std::uniform_real_distribution<float> wide(-8.0f, 8.0f);
  for (int64_t r = 0; r < view.rows; ++r)
    for (int64_t c = 0; c < view.cols; ++c) {
      float v = wide(rng());
      if (std::fabs(v) < 1e-3f) v = 0.5f;
      host[view.index(r, c)] = round_to(dtype, v);
    }
  return host;
}

TEST_F(CudaKernels, UnaryActivationsMatchTheReference) {
  for (fx::cuda::Unary op : {fx::cuda::Unary::GeluTanh, fx::cuda::Unary::Silu, fx::cuda::Unary::QuickGelu})
    for (DType dtype : kActs)
      for (Layout layout : kLayouts)
        for (int64_t cols : kPointwiseCols) {
          const int64_t rows = 13;
          const View xv = make_view(rows, cols, layout);
          const std::vector<float> x = activation_inputs(xv, dtype);
          DeviceArray dx(dtype, x);
          std::vector<float> want = gather(x, xv);
          const int64_t n = int64_t(want.size());
          const char* name = "gelu_tanh";
          if (op == fx::cuda::Unary::GeluTanh) {
            fx::cpu::gelu_tanh_reference(want.data(), n);
          } else if (op == fx::cuda::Unary::Silu) {
            fx::cpu::silu_reference(want.data(), n);
            name = "silu";
          } else {
            fx::cpu::quick_gelu_reference(want.data(), n);
            name = "quick_gelu";
          }
          fx::cuda::unary(op, dtype, dx.at(xv.offset), rows, cols, xv.ld, nullptr);
          expect_view(dx.download(), xv, want, tolerance(dtype), describe(dtype, layout, rows, cols) + " " + name);
        }
}

TEST_F(CudaKernels, BiasActivationMatchesTheReference) {
  using fx::cuda::Epilogue;
  for (Epilogue ep : {Epilogue::None, Epilogue::GeluTanh, Epilogue::Silu})
    for (DType dtype : kActs)
      for (Layout layout : kLayouts)
        for (int64_t cols : kPointwiseCols) {
          const int64_t rows = 13;
          const View yv = make_view(rows, cols, layout);
          const std::vector<float> y = activation_inputs(yv, dtype);
          const std::vector<float> bias = random_vector(size_t(cols));
          DeviceFloats db(bias, layout == Layout::Aligned ? 0 : 1);
          DeviceArray dy(dtype, y);
          std::vector<float> want = gather(y, yv);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
              const double v = double(want[size_t(r * cols + c)]) + double(bias[size_t(c)]);
              double out = v;
              if (ep == Epilogue::GeluTanh) out = 0.5 * v * (1.0 + std::tanh(0.7978845608028654 * (v + 0.044715 * v * v * v)));
              if (ep == Epilogue::Silu) out = v / (1.0 + std::exp(-v));
              want[size_t(r * cols + c)] = float(out);
            }
          fx::cuda::bias_activation(dtype, dy.at(yv.offset), rows, cols, yv.ld, db.get(), ep, nullptr);
          expect_view(dy.download(), yv, want, tolerance(dtype),
                      describe(dtype, layout, rows, cols) + " epilogue " + std::to_string(int(ep)));
        }
}

// Same bits as fx::convert (NaN, infinities, subnormals, ties included); the same dtype is a bit copy.
TEST_F(CudaKernels, CopyConvertEqualsTheCpuConversionBitForBit) {
  for (DType src : kActs)
    for (DType dst : kActs)
      for (Layout layout : kLayouts)
        for (int64_t cols : kPointwiseCols) {
          const int64_t rows = 13;
          const View sv = make_view(rows, cols, layout);
          const View dv = layout == Layout::Aligned ? View{rows, cols, sv.ld + 8, 0} : View{rows, cols, cols + 1, 1};
          const size_t ss = fx::dtype_size(src), ds = fx::dtype_size(dst);
          // Raw random bits in the source view (every kind of value), poison elsewhere.
          std::vector<uint8_t> source(sv.size() * ss, 0xA7);
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c) {
              const uint64_t bits = rng()();
              std::memcpy(&source[sv.index(r, c) * ss], &bits, ss);
            }
          std::vector<uint8_t> dest(dv.size() * ds, 0xA7);
          DeviceBuffer dsrc(source.size()), ddst(dest.size());
          cuda_ok(cudaMemcpy(dsrc.get(), source.data(), source.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
          cuda_ok(cudaMemcpy(ddst.get(), dest.data(), dest.size(), cudaMemcpyHostToDevice), "cudaMemcpy");
          std::vector<uint8_t> want = dest;
          for (int64_t r = 0; r < rows; ++r)
            fx::convert(src, &source[sv.index(r, 0) * ss], dst, &want[dv.index(r, 0) * ds], size_t(cols),
                        fx::Overflow::Ieee);
          fx::cuda::copy_convert(src, static_cast<uint8_t*>(dsrc.get()) + sv.offset * int64_t(ss), rows, cols, sv.ld,
                                 dst, static_cast<uint8_t*>(ddst.get()) + dv.offset * int64_t(ds), dv.ld, nullptr);
          cuda_ok(cudaDeviceSynchronize(), "copy_convert");
          std::vector<uint8_t> got(dest.size());
          cuda_ok(cudaMemcpy(got.data(), ddst.get(), got.size(), cudaMemcpyDeviceToHost), "cudaMemcpy");
          size_t mismatches = 0;
          for (size_t i = 0; i < got.size(); ++i) mismatches += got[i] != want[i];
          EXPECT_EQ(mismatches, 0u) << name_of(src) << " -> " << name_of(dst) << " " << name_of(layout) << " cols "
                                    << cols;
        }
}

// ---------------------------------------------------------------------------------------------------
// Attention

enum class BiasKind { None, Random, WithMaskedRow };

struct AttentionCase {
  DType dtype;
  int64_t batch, heads, seq_q, seq_kv, head_dim;
  bool causal;
  BiasKind bias;
  Layout layout;
  bool fused;  // q, k, v as column blocks of one [B, L, 3·H·D] buffer (needs seq_q == seq_kv)
};

std::string describe(const AttentionCase& c) {
  return std::string(name_of(c.dtype)) + " B" + std::to_string(c.batch) + " H" + std::to_string(c.heads) + " Lq" +
         std::to_string(c.seq_q) + " Lkv" + std::to_string(c.seq_kv) + " D" + std::to_string(c.head_dim) +
         (c.causal ? " causal" : "") + (c.bias == BiasKind::Random ? " bias" : "") +
         (c.bias == BiasKind::WithMaskedRow ? " bias(-inf, a masked row)" : "") + " " + name_of(c.layout) +
         (c.fused ? " fused-qkv" : "");
}

// A [batch, seq, width] operand in a buffer: element (b, l, col) at offset + b·batch_stride + l·row_stride + col.
struct Operand3 {
  int64_t offset, batch_stride, row_stride;
};

void run_attention_case(const AttentionCase& c) {
  SCOPED_TRACE(describe(c));
  const int64_t hd = c.heads * c.head_dim;
  const int64_t pad = c.layout == Layout::Aligned ? 8 : 3;
  const int64_t start = c.layout == Layout::Aligned ? 0 : 1;
  Operand3 q{}, k{}, v{}, o{};
  size_t qkv_size = 0, kv_size = 0;
  if (c.fused) {
    const int64_t rs = 3 * hd + pad;
    const int64_t bs = c.seq_q * rs + pad;
    q = Operand3{start, bs, rs};
    k = Operand3{start + hd, bs, rs};
    v = Operand3{start + 2 * hd, bs, rs};
    qkv_size = size_t(start + c.batch * bs);
  } else {
    const int64_t rs = hd + pad;
    q = Operand3{start, c.seq_q * rs, rs};
    qkv_size = size_t(start + c.batch * c.seq_q * rs);
    k = Operand3{start, c.seq_kv * rs, rs};
    v = Operand3{start + c.batch * c.seq_kv * rs + pad, c.seq_kv * rs, rs};
    kv_size = size_t(v.offset + c.batch * c.seq_kv * rs);
  }
  const int64_t ors = hd + (c.layout == Layout::Aligned ? 8 : 5);
  o = Operand3{start, c.seq_q * ors + 2 * pad, ors};
  const size_t out_size = size_t(start + c.batch * o.batch_stride);

  // Host buffers: NaN outside the operands. Scaled so that the logits span a few units.
  std::vector<float> qbuf(qkv_size, kNaN), kvbuf(kv_size, kNaN);
  std::vector<float>& kbuf = c.fused ? qbuf : kvbuf;
  std::vector<float>& vbuf = c.fused ? qbuf : kvbuf;
  auto fill = [&](std::vector<float>& buf, const Operand3& op, int64_t seq) {
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t l = 0; l < seq; ++l)
        for (int64_t col = 0; col < hd; ++col)
          buf[size_t(op.offset + b * op.batch_stride + l * op.row_stride + col)] = round_to(c.dtype, random_value());
  };
  fill(qbuf, q, c.seq_q);
  fill(kbuf, k, c.seq_kv);
  fill(vbuf, v, c.seq_kv);

  std::vector<float> bias;
  if (c.bias != BiasKind::None) {
    bias.resize(size_t(c.heads * c.seq_q * c.seq_kv));
    for (float& b : bias) b = 2.0f * random_value();
    if (c.bias == BiasKind::WithMaskedRow && c.seq_kv > 0) {
      std::uniform_int_distribution<size_t> pick(0, bias.size() - 1);
      for (size_t i = 0; i < bias.size() / 5; ++i) bias[pick(rng())] = -kInf;
      // Query row 1 (or 0) of head 0 sees no key at all: its output must be zeros.
      const int64_t row = std::min<int64_t>(1, c.seq_q - 1);
      for (int64_t j = 0; j < c.seq_kv; ++j) bias[size_t(row * c.seq_kv + j)] = -kInf;
    }
  }

  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  fx::cpu::AttentionShape shape;
  shape.batch = c.batch;
  shape.heads = c.heads;
  shape.seq_q = c.seq_q;
  shape.seq_kv = c.seq_kv;
  shape.head_dim = c.head_dim;
  shape.scale = scale;
  shape.causal = c.causal;
  shape.bias = bias.empty() ? nullptr : bias.data();
  std::vector<float> want_buf(out_size, kNaN);
  auto operand = [&](const std::vector<float>& buf, const Operand3& op) {
    return fx::cpu::AttentionOperand{buf.data() + op.offset, op.batch_stride, op.row_stride, c.head_dim};
  };
  fx::cpu::attention_reference(shape, operand(qbuf, q), operand(kbuf, k), operand(vbuf, v),
                               fx::cpu::AttentionOutput{want_buf.data() + o.offset, o.batch_stride, o.row_stride,
                                                        c.head_dim});

  DeviceArray dq(c.dtype, qbuf);
  DeviceArray dkv(c.dtype, c.fused ? std::vector<float>{0.0f} : kvbuf);
  const DeviceArray& dk = c.fused ? dq : dkv;
  DeviceArray dout(c.dtype, std::vector<float>(out_size, kNaN));
  const DeviceFloats dbias(bias.empty() ? std::vector<float>{0.0f} : bias, 0);

  fx::cuda::AttentionArgs args;
  args.act = c.dtype;
  args.q = dq.at(q.offset);
  args.k = dk.at(k.offset);
  args.v = dk.at(v.offset);
  args.out = dout.at(o.offset);
  args.q_batch_stride = q.batch_stride, args.q_row_stride = q.row_stride;
  args.k_batch_stride = k.batch_stride, args.k_row_stride = k.row_stride;
  args.v_batch_stride = v.batch_stride, args.v_row_stride = v.row_stride;
  args.out_batch_stride = o.batch_stride, args.out_row_stride = o.row_stride;
  args.batch = c.batch, args.heads = c.heads, args.seq_q = c.seq_q, args.seq_kv = c.seq_kv;
  args.head_dim = c.head_dim;
  args.scale = scale;
  args.causal = c.causal;
  args.bias = bias.empty() ? nullptr : dbias.get();
  fx::cuda::attention(args, nullptr);
  const std::vector<float> got = dout.download();

  // The output view as [batch·seq_q, hd] rows (the batch gap is part of the stride).
  std::vector<float> got_rows, want_rows;
  size_t outside = 0;
  std::vector<bool> inside(out_size, false);
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t l = 0; l < c.seq_q; ++l)
      for (int64_t col = 0; col < hd; ++col) {
        const size_t i = size_t(o.offset + b * o.batch_stride + l * o.row_stride + col);
        inside[i] = true;
        got_rows.push_back(got[i]);
        want_rows.push_back(want_buf[i]);
      }
  for (size_t i = 0; i < out_size; ++i)
    if (!inside[i] && !std::isnan(got[i])) ++outside;
  const double err = relative_l2(got_rows, want_rows);
  EXPECT_LT(err, tolerance(c.dtype)) << "relative L2 " << err;
  EXPECT_EQ(outside, 0u) << "elements outside the output view were written";
  if (c.bias == BiasKind::WithMaskedRow && c.seq_kv > 0) {
    const int64_t row = std::min<int64_t>(1, c.seq_q - 1);
    size_t nonzero = 0;
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t col = 0; col < c.head_dim; ++col)
        nonzero += got[size_t(o.offset + b * o.batch_stride + row * o.row_stride + col)] != 0.0f;
    EXPECT_EQ(nonzero, 0u) << "a query row with every key masked must give zeros";
  }
  if (c.seq_kv == 0) {
    EXPECT_EQ(err, 0.0) << "no keys: zeros";
  }
}

TEST_F(CudaKernels, AttentionMatchesTheReferenceAcrossHeadDims) {
  for (DType dtype : kActs)
    for (int64_t d : {64, 128, 8, 16, 40, 72, 96, 136, 200, 256, 264, 384, 512})
      for (Layout layout : kLayouts)
        run_attention_case({dtype, 2, 3, 77, 77, d, false, BiasKind::None, layout, true});
}

TEST_F(CudaKernels, AttentionMatchesTheReferenceAcrossSequenceLengths) {
  const std::pair<int64_t, int64_t> lengths[] = {{1, 1}, {1, 200}, {17, 17}, {64, 64}, {65, 63}, {130, 300}, {300, 130}};
  for (DType dtype : kActs)
    for (int64_t d : {64, 128})
      for (const auto& [lq, lkv] : lengths)
        for (Layout layout : kLayouts) run_attention_case({dtype, 2, 2, lq, lkv, d, false, BiasKind::None, layout, false});
}

TEST_F(CudaKernels, AttentionCausalMatchesTheReference) {
  const std::pair<int64_t, int64_t> lengths[] = {{1, 1}, {77, 77}, {130, 130}, {100, 60}, {60, 100}};
  for (DType dtype : kActs)
    for (int64_t d : {64, 128, 40})
      for (const auto& [lq, lkv] : lengths)
        for (Layout layout : kLayouts)
          run_attention_case({dtype, 2, 3, lq, lkv, d, true, BiasKind::None, layout, lq == lkv});
}

TEST_F(CudaKernels, AttentionWithBiasMatchesTheReference) {
  for (DType dtype : kActs)
    for (int64_t d : {64, 128, 256})
      for (BiasKind bias : {BiasKind::Random, BiasKind::WithMaskedRow})
        for (Layout layout : kLayouts) {
          run_attention_case({dtype, 2, 3, 70, 70, d, false, bias, layout, true});
          run_attention_case({dtype, 1, 2, 40, 150, d, false, bias, layout, false});
          run_attention_case({dtype, 2, 2, 90, 90, d, true, bias, layout, false});
        }
}

TEST_F(CudaKernels, AttentionWithoutKeysWritesZeros) {
  for (DType dtype : kActs) run_attention_case({dtype, 2, 2, 5, 0, 64, false, BiasKind::None, Layout::Aligned, false});
}

// FLUX's shape at a reduced sequence (24 heads of 128, joint sequence), and T5's (64, with bias).
TEST_F(CudaKernels, AttentionAtModelShapes) {
  run_attention_case({DType::BF16, 1, 24, 600, 600, 128, false, BiasKind::None, Layout::Aligned, true});
  run_attention_case({DType::BF16, 1, 64, 256, 256, 64, false, BiasKind::Random, Layout::Aligned, true});
  run_attention_case({DType::F32, 1, 12, 77, 77, 64, true, BiasKind::None, Layout::Aligned, true});
  // The autoencoder's mid-block attention: one head of 512 channels over the latent's pixels (the CUDA-core
  // kernel with K and V sharing shared memory), in both dtypes; and T5's query slices against all keys.
  run_attention_case({DType::F32, 1, 1, 300, 300, 512, false, BiasKind::None, Layout::Aligned, true});
  run_attention_case({DType::BF16, 1, 1, 300, 300, 512, false, BiasKind::None, Layout::Aligned, true});
  run_attention_case({DType::F32, 2, 1, 130, 130, 512, false, BiasKind::None, Layout::Odd, false});
  run_attention_case({DType::F32, 2, 8, 37, 120, 64, false, BiasKind::Random, Layout::Aligned, false});
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

TEST(CudaKernelArguments, BadArgumentsAreRejectedBeforeCudaIsTouched) {
  float dummy[64] = {};
  fx::cuda::AttentionArgs args;
  args.act = DType::BF16;
  args.q = args.k = args.v = dummy;
  args.out = dummy;
  args.seq_q = args.seq_kv = 4;
  args.head_dim = 12;  // not a multiple of 8
  EXPECT_EQ(status_of([&] { fx::cuda::attention(args, nullptr); }), FX_ERR_INVALID_ARGUMENT);
  args.head_dim = 520;
  EXPECT_EQ(status_of([&] { fx::cuda::attention(args, nullptr); }), FX_ERR_INVALID_ARGUMENT);
  args.head_dim = 64;
  args.act = DType::F16;
  EXPECT_EQ(status_of([&] { fx::cuda::attention(args, nullptr); }), FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] { fx::cuda::unary(fx::cuda::Unary::Silu, DType::F16, dummy, 1, 1, 1, nullptr); }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] {
              fx::cuda::copy_convert(DType::F32, dummy, 1, 1, 1, DType::F8_E4M3FN, dummy, 1, nullptr);
            }),
            FX_ERR_UNSUPPORTED);
  EXPECT_EQ(status_of([&] { fx::cuda::rope_apply(DType::F32, dummy, 1, 8, 1, 7, dummy, dummy, nullptr); }),
            FX_ERR_INVALID_ARGUMENT);
  // Empty shapes launch nothing and succeed, with or without a GPU.
  EXPECT_EQ(status_of([&] { fx::cuda::gated_add(DType::F32, dummy, 0, 8, 8, dummy, dummy, 8, nullptr); }), FX_OK);
  EXPECT_EQ(status_of([&] { fx::cuda::rms_norm(DType::BF16, dummy, 4, 0, 8, dummy, 1e-6f, dummy, 8, nullptr); }),
            FX_OK);
  args.act = DType::F32;
  args.seq_q = 0;
  EXPECT_EQ(status_of([&] { fx::cuda::attention(args, nullptr); }), FX_OK);
}

TEST(CudaKernelArguments, WithoutAGpuALaunchIsABackendErrorNamingTheKernel) {
  if (fx::cuda::device_count() != 0) GTEST_SKIP() << "a GPU is present: launches succeed";
  float dummy[64] = {};
  std::string message;
  EXPECT_EQ(status_of([&] { fx::cuda::gated_add(DType::F32, dummy, 2, 8, 8, dummy, dummy, 8, nullptr); }, &message),
            FX_ERR_BACKEND);
  EXPECT_NE(message.find("gated_add"), std::string::npos) << message;
  EXPECT_EQ(status_of([&] { fx::cuda::layernorm_affine(DType::BF16, dummy, 2, 8, 8, dummy, dummy, 1e-6f, dummy, 8, nullptr); },
                      &message),
            FX_ERR_BACKEND);
  EXPECT_NE(message.find("layernorm_affine"), std::string::npos) << message;
  fx::cuda::AttentionArgs args;
  args.act = DType::F32;
  args.q = args.k = args.v = dummy;
  args.out = dummy;
  args.seq_q = args.seq_kv = 4;
  args.head_dim = 8;
  EXPECT_EQ(status_of([&] { fx::cuda::attention(args, nullptr); }, &message), FX_ERR_BACKEND);
  EXPECT_NE(message.find("attention"), std::string::npos) << message;
}

}  // namespace
