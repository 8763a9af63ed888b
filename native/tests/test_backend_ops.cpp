// Every operation of every backend built, against the plain references of ops/cpu (ggml's
// test-backend-ops at our scale). Inputs are random (never zeros) and passed as the models pass them:
// strided column blocks of wider buffers. Outputs start as NaN, and the columns around a strided output
// must come back untouched, so a write outside the view or a skipped element fails; NaN never passes.
//
// Backends: the CPU always (at every ISA level this machine has); a CUDA backend joins the list where the
// build, the driver and a GPU are there and the backend can run models (backend_for() says why not).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/conv2d.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/linear.h"
#include "test_support.h"

namespace {

using fx::DType;
using fx::backend::Backend;
using fx::backend::Tensor;

const float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_values(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) {
    x = dist(rng);
    if (x == 0.0f) x = 0.5f * scale;
  }
  return v;
}

// Relative L2 over the values; NaN anywhere gives NaN (which fails every EXPECT_LE).
double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i])) return std::numeric_limits<double>::quiet_NaN();
    if (std::isnan(want[i])) continue;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// The backends to check, each with a name for the traces.
struct NamedBackend {
  std::string name;
  std::shared_ptr<Backend> backend;
};

std::vector<NamedBackend> backends_under_test() {
  std::vector<NamedBackend> list{{"cpu", fx::backend::cpu_backend()}};
  try {
    list.push_back({"cuda:0", fx::backend::backend_for(fx::backend::Device::cuda(0))});
  } catch (const fx::Error& e) {
    std::printf("[ backends ] cuda:0 not tested here: %s\n", e.what());
  }
  return list;
}

// Runs `body` on every backend, and for the CPU at every ISA level this machine has.
void for_each_backend(const std::function<void(Backend&)>& body) {
  for (const auto& b : backends_under_test()) {
    SCOPED_TRACE("backend " + b.name);
    if (b.backend->device().kind == fx::backend::DeviceKind::Cpu)
      fx::testing::for_each_isa_level([&] { body(*b.backend); });
    else
      body(*b.backend);
  }
}

// A [rows, cols] block at column `c0` of a [rows, width] host buffer, uploaded; the whole buffer comes
// back with download() so the untouched columns can be checked.
struct Strided {
  int64_t rows, cols, width, c0;
  std::vector<float> host;  // [rows, width]
  Tensor whole, view;
  Strided(Backend& be, int64_t rows_, int64_t cols_, int64_t extra, uint32_t seed, bool poison = false)
      : rows(rows_), cols(cols_), width(cols_ + extra), c0(extra / 2) {
    host = poison ? std::vector<float>(size_t(rows * width), kNaN) : random_values(size_t(rows * width), seed);
    if (poison)  // the columns outside the view hold values that must survive
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < width; ++c)
          if (c < c0 || c >= c0 + cols) host[size_t(r * width + c)] = float(r * width + c) * 0.25f + 1.0f;
    whole = be.to_device(host.data(), DType::F32, {rows, width});
    view = whole.narrow(1, c0, cols);
  }
  // The view's values as a dense [rows, cols] vector (from the host copy).
  std::vector<float> dense() const {
    std::vector<float> d(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) d[size_t(r * cols + c)] = host[size_t(r * width + c0 + c)];
    return d;
  }
  // Downloads, checks the columns outside the view kept their values, returns the view densely.
  std::vector<float> fetch(Backend& be) const {
    std::vector<float> all(host.size());
    be.download(whole, all.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < width; ++c)
        if (c < c0 || c >= c0 + cols) {
          const float want = host[size_t(r * width + c)];
          if (!(all[size_t(r * width + c)] == want || (std::isnan(want) && std::isnan(all[size_t(r * width + c)]))))
            ADD_FAILURE() << "column " << c << " of row " << r << " outside the view was changed";
        }
    std::vector<float> d(size_t(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) d[size_t(r * cols + c)] = all[size_t(r * width + c0 + c)];
    return d;
  }
};

std::vector<float> download(Backend& be, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  be.download(t, v.data());
  return v;
}

TEST(BackendOps, LinearWithBiasAndActivationsOnStridedViews) {
  for_each_backend([](Backend& be) {
    const int64_t m = 37, k = 70, n = 45;
    const std::vector<float> w = random_values(size_t(n * k), 1, 0.1f), bias = random_values(size_t(n), 2);
    for (auto act : {fx::backend::Activation::None, fx::backend::Activation::GeluTanh, fx::backend::Activation::Silu}) {
      for (auto format : {fx::backend::WeightFormat::F32, fx::backend::WeightFormat::BF16}) {
        auto layer = be.linear_layer({DType::F32, w.data(), n, k, "w"}, bias, format, fx::backend::Precision::Exact);
        Strided x(be, m, k, 6, 3), y(be, m, n, 9, 0, true);
        be.linear(x.view, *layer, act, y.view);
        // The reference on the weights as the layer holds them.
        std::vector<float> wr = w;
        if (format == fx::backend::WeightFormat::BF16)
          for (float& v : wr) v = fx::bf16_to_f32(fx::f32_to_bf16(v));
        std::vector<float> want(size_t(m * n));
        auto xd = x.dense();
        // A device backend's bf16 GEMM takes bf16 activations too (backend/cuda_backend.cu rounds x first).
        if (format == fx::backend::WeightFormat::BF16 && be.device().kind != fx::backend::DeviceKind::Cpu)
          for (float& v : xd) v = fx::bf16_to_f32(fx::f32_to_bf16(v));
        fx::cpu::linear_reference(xd.data(), m, k, {DType::F32, wr.data(), n, k, nullptr}, bias.data(),
                                  static_cast<fx::cpu::Activation>(static_cast<int>(act)), want.data(), n);
        EXPECT_LE(relative_l2(y.fetch(be), want), 1e-5) << "act " << int(act) << " format " << int(format);
      }
    }
  });
}

TEST(BackendOps, AttentionOnFusedQkvWithBiasAndCausalMask) {
  for_each_backend([](Backend& be) {
    const int64_t B = 2, L = 29, heads = 3, hd = 16, H = heads * hd;
    for (int variant = 0; variant < 3; ++variant) {
      const std::vector<float> qkv_host = random_values(size_t(B * L * 3 * H), 10 + variant);
      const Tensor qkv = be.to_device(qkv_host.data(), DType::F32, {B, L, 3 * H});
      std::vector<float> bias_host = random_values(size_t(heads * L * L), 20);
      const Tensor bias = be.to_device(bias_host.data(), DType::F32, {heads * L * L});
      std::vector<float> out_host(size_t(B * L * H), kNaN);
      const Tensor out = be.to_device(out_host.data(), DType::F32, {B, L, H});
      fx::backend::AttentionParams p;
      p.heads = heads;
      p.scale = 0.25f;
      p.causal = variant == 1;
      p.bias = variant == 2 ? &bias : nullptr;
      be.attention(qkv.narrow(2, 0, H), qkv.narrow(2, H, H), qkv.narrow(2, 2 * H, H), out, p);
      std::vector<float> want(out_host.size());
      fx::cpu::AttentionShape s;
      s.batch = B;
      s.heads = heads;
      s.seq_q = s.seq_kv = L;
      s.head_dim = hd;
      s.scale = p.scale;
      s.causal = p.causal;
      s.bias = variant == 2 ? bias_host.data() : nullptr;
      const float* base = qkv_host.data();
      fx::cpu::attention_reference(s, {base, L * 3 * H, 3 * H, hd}, {base + H, L * 3 * H, 3 * H, hd},
                                   {base + 2 * H, L * 3 * H, 3 * H, hd}, {want.data(), L * H, H, hd});
      EXPECT_LE(relative_l2(download(be, out), want), 1e-5) << "variant " << variant;
    }
  });
}

TEST(BackendOps, RopeAndQkNormOnColumnBlocks) {
  for_each_backend([](Backend& be) {
    const int64_t L = 11, heads = 2, hd = 16, width = heads * hd;
    const std::vector<int> axes{4, 6, 6};
    std::vector<float> ids(size_t(L * 3));
    for (int64_t i = 0; i < L * 3; ++i) ids[size_t(i)] = float((i * 7) % 13);
    const Tensor cos = be.alloc(DType::F32, {L * hd / 2}), sin = be.alloc(DType::F32, {L * hd / 2});
    be.rope_tables(ids.data(), L, axes, 10000.0, cos, sin);
    std::vector<float> cw(size_t(L * hd / 2)), sw(cw.size());
    fx::cpu::rope_tables(ids.data(), L, 3, axes.data(), 10000.0, cw.data(), sw.data());
    EXPECT_LE(relative_l2(download(be, cos), cw), 1e-6);
    EXPECT_LE(relative_l2(download(be, sin), sw), 1e-6);

    Strided x(be, L, width, 8, 31);
    be.rope_apply(x.view, heads, cos, sin);
    std::vector<float> want = x.dense();
    fx::cpu::rope_apply_reference(want.data(), L, width, heads, hd, cw.data(), sw.data());
    EXPECT_LE(relative_l2(x.fetch(be), want), 1e-6);

    Strided z(be, L, width, 8, 32);
    const std::vector<float> w = random_values(size_t(hd), 33);
    be.rms_norm_heads(z.view, heads, be.to_device(w), 1e-6f);
    want = z.dense();
    fx::cpu::rms_norm_heads_reference(want.data(), L, width, heads, hd, w.data(), 1e-6f);
    EXPECT_LE(relative_l2(z.fetch(be), want), 1e-6);
  });
}

TEST(BackendOps, NormsAndResidualsOnStridedRows) {
  for_each_backend([](Backend& be) {
    const int64_t rows = 13, cols = 40;
    const std::vector<float> a = random_values(size_t(cols), 41), b = random_values(size_t(cols), 42);
    const Tensor ta = be.to_device(a), tb = be.to_device(b);
    Strided x(be, rows, cols, 4, 43);
    x.host[0] += 100.0f;  // a large offset that the LayerNorm mean must not lose
    x.whole = be.to_device(x.host.data(), DType::F32, {rows, x.width});
    x.view = x.whole.narrow(1, x.c0, cols);
    const auto xd = x.dense();
    std::vector<float> want(size_t(rows * cols));

    Strided y(be, rows, cols, 6, 0, true);
    be.layernorm_modulate(x.view, ta, tb, 1e-6f, y.view);
    fx::cpu::layernorm_modulate_reference(xd.data(), rows, cols, cols, a.data(), b.data(), 1e-6f, want.data(), cols);
    EXPECT_LE(relative_l2(y.fetch(be), want), 1e-6) << "layernorm_modulate";

    Strided y2(be, rows, cols, 6, 0, true);
    be.layernorm(x.view, ta, tb, 1e-5f, y2.view);
    fx::cpu::layernorm_affine_reference(xd.data(), rows, cols, cols, a.data(), b.data(), 1e-5f, want.data(), cols);
    EXPECT_LE(relative_l2(y2.fetch(be), want), 1e-6) << "layernorm";

    Strided y3(be, rows, cols, 6, 0, true);
    be.rms_norm(x.view, ta, 1e-6f, y3.view);
    fx::cpu::rms_norm_reference(xd.data(), rows, cols, cols, a.data(), 1e-6f, want.data(), cols);
    EXPECT_LE(relative_l2(y3.fetch(be), want), 1e-6) << "rms_norm";

    Strided r(be, rows, cols, 2, 44), g(be, rows, cols, 10, 45);
    be.gated_add(r.view, ta, g.view);
    want = r.dense();
    const auto gd = g.dense();
    fx::cpu::gated_add_reference(want.data(), rows, cols, cols, a.data(), gd.data(), cols);
    EXPECT_LE(relative_l2(r.fetch(be), want), 1e-6) << "gated_add";
  });
}

TEST(BackendOps, ElementwiseOnContiguousAndStridedTensors) {
  using Unary = void (Backend::*)(const Tensor&);
  using Reference = void (*)(float*, int64_t);
  const std::vector<std::tuple<const char*, Unary, Reference>> unaries{
      {"gelu_tanh", &Backend::gelu_tanh, fx::cpu::gelu_tanh_reference},
      {"silu", &Backend::silu, fx::cpu::silu_reference},
      {"quick_gelu", &Backend::quick_gelu, fx::cpu::quick_gelu_reference}};
  for_each_backend([&](Backend& be) {
    for (const auto& [name, op, reference] : unaries) {
      for (int64_t extra : {0, 5}) {
        Strided x(be, 9, 33, extra, 50);
        (be.*op)(extra == 0 ? x.whole : x.view);
        std::vector<float> want = x.dense();
        reference(want.data(), int64_t(want.size()));
        EXPECT_LE(relative_l2(x.fetch(be), want), 2e-6) << name << " extra " << extra;
      }
    }
    for (int64_t extra : {0, 3}) {
      Strided x(be, 7, 21, extra, 51), y(be, 7, 21, extra + 2, 52);
      be.add(x.view, y.view);
      std::vector<float> want = x.dense();
      const auto yd = y.dense();
      fx::cpu::add_inplace_reference(want.data(), yd.data(), int64_t(want.size()));
      EXPECT_LE(relative_l2(x.fetch(be), want), 1e-7) << "add";
      Strided u(be, 7, 21, extra, 53);
      be.mul(u.view, y.view);
      want = u.dense();
      fx::cpu::mul_inplace_reference(want.data(), yd.data(), int64_t(want.size()));
      EXPECT_LE(relative_l2(u.fetch(be), want), 1e-7) << "mul";
      Strided c(be, 7, 21, 4, 0, true);
      be.copy(y.view, c.view);
      EXPECT_EQ(c.fetch(be), yd) << "copy";
    }
  });
}

TEST(BackendOps, EmbeddingAndRelativePositionBias) {
  for_each_backend([](Backend& be) {
    const int64_t vocab = 19, hidden = 12;
    const std::vector<float> table = random_values(size_t(vocab * hidden), 60);
    std::vector<uint16_t> table_bf16(table.size());
    for (size_t i = 0; i < table.size(); ++i) table_bf16[i] = fx::f32_to_bf16(table[i]);
    const std::vector<int32_t> ids{3, 0, 18, 3, 7};
    for (DType dtype : {DType::F32, DType::BF16}) {
      const void* data = dtype == DType::F32 ? static_cast<const void*>(table.data()) : table_bf16.data();
      const Tensor t = be.to_device(data, dtype, {vocab, hidden});
      const Tensor out = be.alloc(DType::F32, {int64_t(ids.size()), hidden});
      be.embedding(t, ids.data(), int64_t(ids.size()), out);
      std::vector<float> want;
      for (int32_t id : ids)
        for (int64_t c = 0; c < hidden; ++c) {
          const float v = table[size_t(id * hidden + c)];
          want.push_back(dtype == DType::F32 ? v : fx::bf16_to_f32(fx::f32_to_bf16(v)));
        }
      EXPECT_EQ(download(be, out), want) << fx::dtype_name(dtype);
    }
    const int64_t buckets = 8, heads = 3, L = 6, q0 = 2, nq = 3;
    const std::vector<float> rel = random_values(size_t(buckets * heads), 61);
    std::vector<int32_t> bucket_of(size_t(2 * L - 1));
    for (size_t i = 0; i < bucket_of.size(); ++i) bucket_of[i] = int32_t((i * 5) % buckets);
    const Tensor out = be.alloc(DType::F32, {heads, nq, L});
    be.relative_position_bias(be.to_device(rel.data(), DType::F32, {buckets, heads}), bucket_of, q0, L, out);
    std::vector<float> want;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < nq; ++i)
        for (int64_t j = 0; j < L; ++j) want.push_back(rel[size_t(bucket_of[size_t(j - (q0 + i) + L - 1)] * heads + h)]);
    EXPECT_EQ(download(be, out), want);
  });
}

TEST(BackendOps, ImageOperations) {
  for_each_backend([](Backend& be) {
    const int64_t cin = 5, cout = 7, h = 6, w = 9;
    const std::vector<float> x = random_values(size_t(cin * h * w), 70);
    const Tensor tx = be.to_device(x.data(), DType::F32, {cin, h, w});
    for (int64_t k : {1, 3}) {
      for (bool down : {false, true}) {
        if (down && k == 1) continue;
        const std::vector<float> wt = random_values(size_t(cout * cin * k * k), 71, 0.2f), bias = random_values(size_t(cout), 72);
        auto layer = be.conv_layer(wt.data(), cout, cin, k, k, bias);
        fx::backend::ConvGeometry g;
        fx::cpu::Conv2dShape s;
        s.in_channels = cin;
        s.out_channels = cout;
        s.height = h;
        s.width = w;
        s.kernel_h = s.kernel_w = k;
        if (down) {
          g.stride = s.stride = 2;
          g.pad_bottom = g.pad_right = s.pad_bottom = s.pad_right = 1;
        } else {
          g.pad_top = g.pad_bottom = g.pad_left = g.pad_right = k / 2;
          s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = k / 2;
        }
        const int64_t oh = s.out_height(), ow = s.out_width();
        std::vector<float> prior = random_values(size_t(cout * oh * ow), 73);
        for (bool accumulate : {false, true}) {
          const Tensor y = be.to_device(prior.data(), DType::F32, {cout, oh, ow});
          be.conv2d(tx, *layer, g, accumulate, y);
          std::vector<float> want = prior;
          fx::cpu::conv2d_reference(x.data(), 1, s, wt.data(), bias.data(), fx::cpu::Activation::None, accumulate,
                                    want.data());
          EXPECT_LE(relative_l2(download(be, y), want), 1e-5) << "k " << k << " down " << down << " acc " << accumulate;
        }
      }
    }
    const int64_t c = 8, groups = 4;
    const std::vector<float> gamma = random_values(size_t(c), 74), beta = random_values(size_t(c), 75);
    const std::vector<float> gx = random_values(size_t(c * h * w), 76);
    for (bool silu : {false, true}) {
      const Tensor y = be.alloc(DType::F32, {c, h, w});
      be.group_norm(be.to_device(gx.data(), DType::F32, {c, h, w}), groups, be.to_device(gamma), be.to_device(beta),
                    1e-6f, silu, y);
      std::vector<float> want(gx.size());
      fx::cpu::group_norm_reference(gx.data(), 1, c, h * w, groups, gamma.data(), beta.data(), 1e-6f, silu, want.data());
      EXPECT_LE(relative_l2(download(be, y), want), 1e-6) << "group_norm silu " << silu;
    }
    const Tensor up = be.alloc(DType::F32, {cin, 2 * h, 2 * w});
    be.upsample_nearest2x(tx, up);
    std::vector<float> want(size_t(cin * 4 * h * w));
    fx::cpu::upsample_nearest2x_reference(x.data(), cin, h, w, want.data());
    EXPECT_EQ(download(be, up), want);

    const Tensor t = be.alloc(DType::F32, {h * w, cin});
    be.transpose(tx.reshape({cin, h * w}), t, false);
    std::vector<float> tw(size_t(h * w * cin));
    for (int64_t r = 0; r < cin; ++r)
      for (int64_t q = 0; q < h * w; ++q) tw[size_t(q * cin + r)] = x[size_t(r * h * w + q)];
    EXPECT_EQ(download(be, t), tw);

    const Tensor scaled = be.alloc(DType::F32, {cin, h, w});
    be.scale_latents(tx, 0.3611, 0.1159, true, scaled);
    std::vector<float> sw(x.size());
    for (size_t i = 0; i < x.size(); ++i) sw[i] = float(double(x[i]) / 0.3611 + 0.1159);
    EXPECT_EQ(download(be, scaled), sw);
  });
}

// Attention as the encoders call it: CLIP's causal mask (77 tokens), T5's additive bias over query slices
// against every key (scale 1), the autoencoder's one head of 512 channels.
TEST(BackendOps, AttentionAtEncoderShapes) {
  for_each_backend([](Backend& be) {
    struct Case {
      const char* name;
      int64_t batch, seq, heads, hd, q0, nq;
      bool causal, bias;
      float scale;
    };
    for (const Case& c : {Case{"clip", 2, 77, 2, 64, 0, 77, true, false, 0.125f},
                          Case{"t5 slice", 2, 40, 3, 64, 16, 17, false, true, 1.0f},
                          Case{"ae", 1, 40, 1, 512, 0, 40, false, false, 0.044194f}}) {
      SCOPED_TRACE(c.name);
      const int64_t H = c.heads * c.hd;
      const std::vector<float> qkv_host = random_values(size_t(c.batch * c.seq * 3 * H), 90, 0.5f);
      const Tensor qkv = be.to_device(qkv_host.data(), DType::F32, {c.batch, c.seq, 3 * H});
      const std::vector<float> bias_host = random_values(size_t(c.heads * c.nq * c.seq), 91);
      const Tensor bias = be.to_device(bias_host.data(), DType::F32, {c.heads * c.nq * c.seq});
      std::vector<float> out_host(size_t(c.batch * c.seq * H), kNaN);
      const Tensor out = be.to_device(out_host.data(), DType::F32, {c.batch, c.seq, H});
      fx::backend::AttentionParams p;
      p.heads = c.heads;
      p.scale = c.scale;
      p.causal = c.causal;
      p.bias = c.bias ? &bias : nullptr;
      const Tensor q = qkv.narrow(2, 0, H).narrow(1, c.q0, c.nq);
      be.attention(q, qkv.narrow(2, H, H), qkv.narrow(2, 2 * H, H), out.narrow(1, c.q0, c.nq), p);
      std::vector<float> want = out_host;
      fx::cpu::AttentionShape s;
      s.batch = c.batch;
      s.heads = c.heads;
      s.seq_q = c.nq;
      s.seq_kv = c.seq;
      s.head_dim = c.hd;
      s.scale = c.scale;
      s.causal = c.causal;
      s.bias = c.bias ? bias_host.data() : nullptr;
      const float* base = qkv_host.data();
      const int64_t bs = c.seq * 3 * H;
      fx::cpu::attention_reference(s, {base + c.q0 * 3 * H, bs, 3 * H, c.hd}, {base + H, bs, 3 * H, c.hd},
                                   {base + 2 * H, bs, 3 * H, c.hd}, {want.data() + c.q0 * H, c.seq * H, H, c.hd});
      EXPECT_LE(relative_l2(download(be, out), want), 1e-5);  // the rows outside the slice stay NaN
    }
  });
}

// Convolutions at the autoencoder's geometries with channel counts that cross the CUDA kernels' tiles, and
// GroupNorm over groups longer than one of their chunks, in place, with and without SiLU.
TEST(BackendOps, ImageOperationsAtWiderShapes) {
  for_each_backend([](Backend& be) {
    const int64_t h = 13, w = 11;
    struct Case {
      int64_t cin, cout, k, stride, pt, pb, pl, pr;
    };
    for (const Case& c : {Case{40, 70, 3, 1, 1, 1, 1, 1}, Case{40, 70, 3, 2, 0, 1, 0, 1}, Case{96, 66, 1, 1, 0, 0, 0, 0},
                          Case{3, 33, 3, 1, 1, 1, 1, 1}}) {
      SCOPED_TRACE("conv " + std::to_string(c.cin) + "->" + std::to_string(c.cout) + " k" + std::to_string(c.k) + " s" +
                   std::to_string(c.stride));
      const std::vector<float> x = random_values(size_t(c.cin * h * w), 80);
      const std::vector<float> wt = random_values(size_t(c.cout * c.cin * c.k * c.k), 81, 0.1f);
      const std::vector<float> bias = random_values(size_t(c.cout), 82);
      auto layer = be.conv_layer(wt.data(), c.cout, c.cin, c.k, c.k, bias);
      fx::backend::ConvGeometry g;
      g.stride = c.stride;
      g.pad_top = c.pt, g.pad_bottom = c.pb, g.pad_left = c.pl, g.pad_right = c.pr;
      fx::cpu::Conv2dShape s;
      s.in_channels = c.cin, s.out_channels = c.cout, s.height = h, s.width = w, s.kernel_h = s.kernel_w = c.k;
      s.stride = c.stride, s.pad_top = c.pt, s.pad_bottom = c.pb, s.pad_left = c.pl, s.pad_right = c.pr;
      const std::vector<float> prior = random_values(size_t(c.cout * s.out_height() * s.out_width()), 83);
      for (bool accumulate : {false, true}) {
        const Tensor y = be.to_device(prior.data(), DType::F32, {c.cout, s.out_height(), s.out_width()});
        be.conv2d(be.to_device(x.data(), DType::F32, {c.cin, h, w}), *layer, g, accumulate, y);
        std::vector<float> want = prior;
        fx::cpu::conv2d_reference(x.data(), 1, s, wt.data(), bias.data(), fx::cpu::Activation::None, accumulate,
                                  want.data());
        EXPECT_LE(relative_l2(download(be, y), want), 1e-5) << "accumulate " << accumulate;
      }
    }
    const int64_t c = 64, groups = 32, hw = 64 * 65;  // 2 × 4160 values a group
    const std::vector<float> gx = random_values(size_t(c * hw), 84);
    const std::vector<float> gamma = random_values(size_t(c), 85), beta = random_values(size_t(c), 86);
    for (bool silu : {false, true}) {
      const Tensor x = be.to_device(gx.data(), DType::F32, {c, 64, 65});
      be.group_norm(x, groups, be.to_device(gamma), be.to_device(beta), 1e-6f, silu, x);
      std::vector<float> want(gx.size());
      fx::cpu::group_norm_reference(gx.data(), 1, c, hw, groups, gamma.data(), beta.data(), 1e-6f, silu, want.data());
      EXPECT_LE(relative_l2(download(be, x), want), 2e-6) << "group_norm in place, silu " << silu;
    }
    // Transpose of a column block into a column block, both ways, = and +=.
    for (bool accumulate : {false, true}) {
      Strided src(be, 130, 67, 5, 87), dst(be, 67, 130, 3, 88);
      be.transpose(src.view, dst.view, accumulate);
      std::vector<float> want = dst.dense();
      const auto sd = src.dense();
      for (int64_t r = 0; r < 130; ++r)
        for (int64_t q = 0; q < 67; ++q) {
          float& o = want[size_t(q * 130 + r)];
          o = accumulate ? o + sd[size_t(r * 67 + q)] : sd[size_t(r * 67 + q)];
        }
      EXPECT_EQ(dst.fetch(be), want) << "transpose accumulate " << accumulate;
    }
  });
}

// The device backends' bf16 activations (the CPU backend is f32 only): the convolution then runs on the
// tensor cores with bf16 weights made from the layer's f32 ones; against the references on bf16-rounded values.
TEST(BackendOps, Bf16ImageOperationsOnDeviceBackends) {
  for (const auto& named : backends_under_test()) {
    Backend& be = *named.backend;
    if (be.device().kind == fx::backend::DeviceKind::Cpu) continue;
    SCOPED_TRACE("backend " + named.name);
    auto bf16 = [](std::vector<float> v) {
      for (float& x : v) x = fx::bf16_to_f32(fx::f32_to_bf16(x));
      return v;
    };
    auto upload = [&](const std::vector<float>& v, std::vector<int64_t> shape) {
      std::vector<uint16_t> bits(v.size());
      for (size_t i = 0; i < v.size(); ++i) bits[i] = fx::f32_to_bf16(v[i]);
      return be.to_device(bits.data(), DType::BF16, std::move(shape));
    };
    auto fetch = [&](const Tensor& t) {
      std::vector<uint16_t> bits(size_t(t.numel()));
      be.download(t, bits.data());
      std::vector<float> v(bits.size());
      for (size_t i = 0; i < v.size(); ++i) v[i] = fx::bf16_to_f32(bits[i]);
      return v;
    };
    const int64_t cin = 40, cout = 70, h = 13, w = 11;
    const std::vector<float> x = bf16(random_values(size_t(cin * h * w), 100));
    const std::vector<float> wt = random_values(size_t(cout * cin * 9), 101, 0.1f), bias = random_values(size_t(cout), 102);
    auto layer = be.conv_layer(wt.data(), cout, cin, 3, 3, bias);
    fx::backend::ConvGeometry g;
    g.pad_top = g.pad_bottom = g.pad_left = g.pad_right = 1;
    fx::cpu::Conv2dShape s;
    s.in_channels = cin, s.out_channels = cout, s.height = h, s.width = w;
    s.pad_top = s.pad_bottom = s.pad_left = s.pad_right = 1;
    const std::vector<float> prior = bf16(random_values(size_t(cout * h * w), 103));
    for (int round = 0; round < 2; ++round) {  // the second call reuses the bf16 weights made by the first
      const Tensor y = upload(prior, {cout, h, w});
      be.conv2d(upload(x, {cin, h, w}), *layer, g, true, y);
      std::vector<float> want = prior;
      fx::cpu::conv2d_reference(x.data(), 1, s, bf16(wt).data(), bias.data(), fx::cpu::Activation::None, true,
                                want.data());
      EXPECT_LE(relative_l2(fetch(y), want), 1e-2) << "conv2d, round " << round;
    }
    const int64_t c = 64, hw = 100;
    const std::vector<float> gx = bf16(random_values(size_t(c * hw), 104));
    const std::vector<float> gamma = random_values(size_t(c), 105), beta = random_values(size_t(c), 106);
    const Tensor gy = upload(std::vector<float>(gx.size(), kNaN), {c, hw});
    be.group_norm(upload(gx, {c, hw}), 32, be.to_device(gamma), be.to_device(beta), 1e-6f, true, gy);
    std::vector<float> want(gx.size());
    fx::cpu::group_norm_reference(gx.data(), 1, c, hw, 32, gamma.data(), beta.data(), 1e-6f, true, want.data());
    EXPECT_LE(relative_l2(fetch(gy), want), 1e-2) << "group_norm";
    const Tensor up = upload(std::vector<float>(size_t(cin * 4 * h * w), kNaN), {cin, 2 * h, 2 * w});
    be.upsample_nearest2x(upload(x, {cin, h, w}), up);
    std::vector<float> up_want(size_t(cin * 4 * h * w));
    fx::cpu::upsample_nearest2x_reference(x.data(), cin, h, w, up_want.data());
    EXPECT_EQ(fetch(up), up_want) << "upsample_nearest2x";
  }
}

TEST(BackendSelection, DevicesParseAndCudaIsRefusedWithTheReason) {
  EXPECT_EQ(fx::backend::Device::parse("cpu"), fx::backend::Device::cpu());
  EXPECT_EQ(fx::backend::Device::parse("cuda"), fx::backend::Device::cuda(0));
  EXPECT_EQ(fx::backend::Device::parse("cuda:3"), fx::backend::Device::cuda(3));
  for (const char* bad : {"", "gpu", "cuda:", "cuda:-1", "cuda:x", "CPU", "cuda:123456"}) {
    try {
      fx::backend::Device::parse(bad);
      ADD_FAILURE() << "\"" << bad << "\" was accepted";
    } catch (const fx::Error& e) {
      EXPECT_EQ(e.status(), FX_ERR_INVALID_ARGUMENT);
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos);
    }
  }
  EXPECT_EQ(fx::backend::backend_for(fx::backend::Device::cpu())->device(), fx::backend::Device::cpu());
  // Never a silent CPU run: a CUDA device either gives a CUDA backend or an error that says what is missing.
  try {
    auto be = fx::backend::backend_for(fx::backend::Device::cuda(0));
    EXPECT_EQ(be->device(), fx::backend::Device::cuda(0));
  } catch (const fx::Error& e) {
    EXPECT_TRUE(e.status() == FX_ERR_UNSUPPORTED || e.status() == FX_ERR_NOT_FOUND) << e.what();
    EXPECT_NE(std::string(e.what()).find("cuda:0"), std::string::npos) << e.what();
  }
}

}  // namespace
