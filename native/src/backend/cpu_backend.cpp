// The CPU backend: every operation of backend.h on the kernels of ops/cpu, over one thread pool.
//
// Tensors live in host memory; a view's strides go straight to the kernels (which take row strides), and
// elementwise operations on strided views run row by row. view_host() and host_output() borrow the
// caller's memory, so the C ABI's buffers are read and written in place: the seam costs no copy here.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/thread_pool.h"
#include "ops/cpu/attention.h"
#include "ops/cpu/conv2d.h"
#include "ops/cpu/elementwise.h"
#include "ops/cpu/linear.h"

namespace fx::backend {

namespace {

[[noreturn]] void bad(const std::string& op, const std::string& what) {
  fail(FX_ERR_INTERNAL, "cpu backend " + op + ": " + what);
}

void need_f32(const std::string& op, const Tensor& t, const char* name) {
  if (t.dtype() != DType::F32) bad(op, std::string(name) + " is " + dtype_name(t.dtype()) + ", not f32");
  if (t.device().kind != DeviceKind::Cpu) bad(op, std::string(name) + " is on " + t.device().name());
  if (t.ndim() > 0 && t.stride(-1) != 1) bad(op, std::string(name) + "'s last dimension is not contiguous");
}

void need_same_shape(const std::string& op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) bad(op, a.shape_text() + " and " + b.shape_text() + " differ");
}

void need_vector(const std::string& op, const Tensor& v, int64_t n, const char* name) {
  need_f32(op, v, name);
  if (v.numel() != n || !v.contiguous())
    bad(op, std::string(name) + " is " + v.shape_text() + ", needs [" + std::to_string(n) + "] contiguous");
}

cpu::Activation to_cpu(Activation act) {
  switch (act) {
    case Activation::None: return cpu::Activation::None;
    case Activation::GeluTanh: return cpu::Activation::GeluTanh;
    case Activation::Silu: return cpu::Activation::Silu;
  }
  return cpu::Activation::None;
}

class CpuLinear final : public LinearLayer {
 public:
  CpuLinear(cpu::PackedWeights w, std::vector<float> bias, cpu::Precision precision)
      : LinearLayer(w.n(), w.k(), !bias.empty()), weights(std::move(w)), bias(std::move(bias)), precision(precision) {}
  cpu::PackedWeights weights;
  std::vector<float> bias;
  cpu::Precision precision;
};

class CpuConv final : public ConvLayer {
 public:
  CpuConv(cpu::PackedConv w, std::vector<float> bias)
      : ConvLayer(w.out_channels(), w.in_channels(), w.kernel_h(), w.kernel_w()), weights(std::move(w)),
        bias(std::move(bias)) {}
  cpu::PackedConv weights;
  std::vector<float> bias;
};

// Packs `stored` (f32, f16, bf16 or e4m3fn on the host) in `format`. A dtype change goes through
// temporaries that die with the call (pack_weights copies what it needs); FP8 quantises row by row on
// `pool`, so no f32 copy of the whole matrix exists. Stored e4m3fn kept as fp8 is packed as it is, its
// per-tensor scale repeated as the per-channel scales.
cpu::PackedWeights pack_in_format(const HostMatrix& stored, WeightFormat format, ThreadPool& pool) {
  const DType dtype = stored.dtype;
  const cpu::Weights view{dtype, stored.data, stored.n, stored.k, nullptr, std::nullopt};
  if (stored.block && format == WeightFormat::AsStored && cpu::block_gemm_supported(*stored.block)) {
    cpu::Weights blocks{DType::F32, stored.data, stored.n, stored.k, nullptr, stored.block};
    try {
      return cpu::pack_weights(blocks);
    } catch (const Error& e) {
      fail(e.status(), stored.label + ": " + e.what());
    }
  }
  if (stored.block) {
    // No quantised GEMM for this type (or another format asked for): dequantise at load, row by row on
    // `pool`, into the format asked; AsStored holds such a matrix as bf16 (docs/checkpoints.md).
    const BlockLayout& layout = block_layout(*stored.block);
    if (stored.k % layout.elements != 0)
      fail(FX_ERR_FORMAT, stored.label + ": rows of " + std::to_string(stored.k) + " values are not whole " + layout.name +
                              " blocks");
    const size_t row_bytes = static_cast<size_t>(stored.k / layout.elements * layout.bytes);
    std::vector<float> decoded(static_cast<size_t>(stored.n * stored.k));
    const auto* src = static_cast<const uint8_t*>(stored.data);
    pool.parallel_for(stored.n, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        dequantize_blocks(*stored.block, src + static_cast<size_t>(i) * row_bytes, stored.k,
                          decoded.data() + static_cast<size_t>(i * stored.k));
    });
    const HostMatrix as_f32{DType::F32, decoded.data(), stored.n, stored.k, stored.label, 1.0f, std::nullopt};
    return pack_in_format(as_f32, format == WeightFormat::AsStored ? WeightFormat::BF16 : format, pool);
  }
  if (dtype != DType::F8_E4M3FN && stored.scale != 1.0f)
    fail(FX_ERR_INTERNAL, stored.label + ": a weight scale is only defined for e4m3fn weights");
  if (dtype == DType::F8_E4M3FN) {
    if (!std::isfinite(stored.scale))
      fail(FX_ERR_INVALID_ARGUMENT, stored.label + ": fp8 scale_weight " + std::to_string(stored.scale) + " is not finite");
    if (format == WeightFormat::AsStored || format == WeightFormat::FP8) {
      const std::vector<float> scales(static_cast<size_t>(stored.n), stored.scale);
      cpu::Weights fp8 = view;
      fp8.row_scale = scales.data();
      try {
        return cpu::pack_weights(fp8);
      } catch (const Error& e) {
        fail(e.status(), stored.label + ": " + e.what());
      }
    }
    // F32 / BF16 asked for explicitly: widen e4m3 · scale to f32 (one rounding), then as any f32 matrix.
    const size_t count = static_cast<size_t>(stored.n * stored.k);
    std::vector<float> widened(count);
    convert(dtype, stored.data, DType::F32, widened.data(), count, Overflow::Ieee);
    for (size_t i = 0; i < count; ++i) {
      if (std::isnan(widened[i]))
        fail(FX_ERR_INVALID_ARGUMENT, stored.label + ": e4m3 weight row " + std::to_string(i / stored.k) + " holds NaN");
      widened[i] *= stored.scale;
    }
    const HostMatrix as_f32{DType::F32, widened.data(), stored.n, stored.k, stored.label, 1.0f, std::nullopt};
    return pack_in_format(as_f32, format, pool);
  }
  const bool keep = (format == WeightFormat::AsStored && (dtype == DType::F32 || dtype == DType::BF16)) ||
                    (format == WeightFormat::F32 && dtype == DType::F32) ||
                    (format == WeightFormat::BF16 && dtype == DType::BF16);
  if (keep) return cpu::pack_weights(view);
  if (!dtype_is_float(dtype) || dtype == DType::F8_E4M3FN || dtype == DType::F8_E5M2)
    fail(FX_ERR_UNSUPPORTED,
         stored.label + " is stored as " + dtype_name(dtype) + ", which linear weights are not loaded from");

  cpu::Weights converted_view = view;
  const size_t count = static_cast<size_t>(stored.n * stored.k);
  std::vector<uint8_t> converted;
  std::vector<float> scales;
  if (format == WeightFormat::FP8) {
    converted.resize(count);
    scales.resize(static_cast<size_t>(stored.n));
    const size_t row_bytes = static_cast<size_t>(stored.k) * dtype_size(dtype);
    const auto* src = static_cast<const uint8_t*>(stored.data);
    pool.parallel_for(stored.n, [&](int64_t i0, int64_t i1) {
      std::vector<float> row(static_cast<size_t>(stored.k));
      for (int64_t i = i0; i < i1; ++i) {
        convert(dtype, src + static_cast<size_t>(i) * row_bytes, DType::F32, row.data(), row.size(), Overflow::Ieee);
        cpu::quantize_e4m3_per_row(row.data(), 1, stored.k, converted.data() + static_cast<size_t>(i * stored.k),
                                   scales.data() + i);
      }
    });
    converted_view.dtype = DType::F8_E4M3FN;
    converted_view.row_scale = scales.data();
  } else {
    // f16 as stored has no kernel: widen exactly to f32. BF16 format: round whatever is stored.
    const DType target = format == WeightFormat::BF16 ? DType::BF16 : DType::F32;
    converted.resize(count * dtype_size(target));
    convert(dtype, stored.data, target, converted.data(), count, Overflow::Ieee);
    converted_view.dtype = target;
  }
  converted_view.data = converted.data();
  return cpu::pack_weights(converted_view);
}

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool) : pool_(pool) {}

  using Backend::to_device;  // the std::vector<float> convenience form

  Device device() const override { return Device::cpu(); }
  std::string describe() const override {
    return "cpu (" + std::to_string(pool_.size()) + " threads, " + isa_level_name(isa_level()) + ")";
  }

  // ---- memory ----
  Tensor alloc(DType dtype, std::vector<int64_t> shape) override {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    auto storage = std::make_shared<Storage>();
    storage->bytes = static_cast<size_t>(n) * dtype_size(dtype);
    // 64-byte alignment for the vector kernels; aligned_alloc wants a multiple of the alignment.
    const size_t padded = std::max<size_t>(64, (storage->bytes + 63) / 64 * 64);
    storage->data = std::aligned_alloc(64, padded);
    if (storage->data == nullptr)
      fail(FX_ERR_OUT_OF_MEMORY, "cpu backend: cannot allocate " + std::to_string(storage->bytes) + " bytes");
    storage->device = Device::cpu();
    storage->release = [](void* data, size_t) { std::free(data); };
    return Tensor::on(std::move(storage), dtype, std::move(shape));
  }

  Tensor to_device(const void* host, DType dtype, std::vector<int64_t> shape) override {
    Tensor t = alloc(dtype, std::move(shape));
    if (t.numel() > 0) std::memcpy(t.data(), host, static_cast<size_t>(t.numel()) * dtype_size(dtype));
    return t;
  }

  Tensor view_host(const void* host, DType dtype, std::vector<int64_t> shape) override {
    return Tensor::borrow(host, dtype, std::move(shape));
  }

  Tensor host_output(void* host, DType dtype, std::vector<int64_t> shape) override {
    return Tensor::borrow(host, dtype, std::move(shape));
  }

  void download(const Tensor& t, void* host) override {
    if (t.data() == host && t.contiguous()) return;
    copy(t, Tensor::borrow(host, t.dtype(), t.shape()));
  }

  void copy(const Tensor& src, const Tensor& dst) override {
    need_same_shape("copy", src, dst);
    if (src.dtype() != dst.dtype()) bad("copy", "dtypes differ");
    const size_t es = dtype_size(src.dtype());
    if (src.contiguous() && dst.contiguous()) {
      std::memmove(dst.data(), src.data(), static_cast<size_t>(src.numel()) * es);
      return;
    }
    const int64_t rows = src.rows(), cols = src.cols();
    const int64_t lds = src.ld(), ldd = dst.ld();
    (void)dst.rows();  // checks dst is a matrix of rows too
    const auto* s = static_cast<const uint8_t*>(src.data());
    auto* d = static_cast<uint8_t*>(dst.data());
    pool_.parallel_for(rows, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        std::memcpy(d + static_cast<size_t>(r * ldd) * es, s + static_cast<size_t>(r * lds) * es,
                    static_cast<size_t>(cols) * es);
    }, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, cols)));
  }

  void synchronize() override {}

  // ---- weights ----
  std::unique_ptr<LinearLayer> linear_layer(const HostMatrix& weight, const std::vector<float>& bias,
                                            WeightFormat format, Precision precision) override {
    if (!bias.empty() && static_cast<int64_t>(bias.size()) != weight.n)
      fail(FX_ERR_FORMAT, weight.label + ": bias has " + std::to_string(bias.size()) + " values for " +
                              std::to_string(weight.n) + " outputs");
    cpu::PackedWeights packed = pack_in_format(weight, format, pool_);
    return std::make_unique<CpuLinear>(std::move(packed), bias,
                                       precision == Precision::Bf16Activations ? cpu::Precision::Bf16Activations
                                                                               : cpu::Precision::Exact);
  }

  std::string weight_layout() const override {
    return "cpu-panels" + std::to_string(cpu::PackedWeights::kPanel) + ".v" +
           std::to_string(cpu::PackedWeights::kLayoutVersion);
  }

  PackedLinear export_linear(const LinearLayer& layer) const override {
    const auto& l = static_cast<const CpuLinear&>(layer);
    if (l.weights.block())
      fail(FX_ERR_UNSUPPORTED, "a GGUF block-quantised layer cannot go into an engine as it is (build from it in "
                               "bf16 or fp8)");
    PackedLinear p;
    p.layout = weight_layout();
    p.dtype = l.weights.dtype();
    p.n = l.weights.n();
    p.k = l.weights.k();
    p.panels = l.weights.panel(0);
    p.bytes = l.weights.bytes();
    if (p.dtype == DType::F8_E4M3FN) {
      p.scales = l.weights.scale256();
      p.scale_count = static_cast<size_t>(l.weights.panels() * cpu::PackedWeights::kPanel);
    }
    p.bias = l.bias;
    p.bf16_activations = l.precision == cpu::Precision::Bf16Activations;
    return p;
  }

  std::unique_ptr<LinearLayer> import_linear(const PackedLinear& p, std::shared_ptr<const void> keep_alive) override {
    if (p.layout != weight_layout())
      fail(FX_ERR_UNSUPPORTED, "engine weights packed as \"" + p.layout + "\" cannot run on " + describe() +
                                   ", which packs as \"" + weight_layout() + "\"; build the engine again with this version");
    if (!p.bias.empty() && static_cast<int64_t>(p.bias.size()) != p.n)
      fail(FX_ERR_FORMAT, "engine layer [" + std::to_string(p.n) + ", " + std::to_string(p.k) + "]: bias has " +
                              std::to_string(p.bias.size()) + " values");
    cpu::PackedWeights w = cpu::PackedWeights::borrow(p.dtype, p.n, p.k, p.panels, p.bytes, p.scales, p.scale_count,
                                                      std::move(keep_alive));
    return std::make_unique<CpuLinear>(std::move(w), p.bias,
                                       p.bf16_activations ? cpu::Precision::Bf16Activations : cpu::Precision::Exact);
  }

  std::unique_ptr<ConvLayer> conv_layer(const float* weight, int64_t out, int64_t in, int64_t kh, int64_t kw,
                                        const std::vector<float>& bias) override {
    if (static_cast<int64_t>(bias.size()) != out) bad("conv_layer", "bias size differs from the output channels");
    return std::make_unique<CpuConv>(cpu::pack_conv_weights(weight, out, in, kh, kw), bias);
  }

  // ---- operations ----
  void linear(const Tensor& x, const LinearLayer& layer, Activation act, const Tensor& y) override {
    const auto& l = static_cast<const CpuLinear&>(layer);
    need_f32("linear", x, "x");
    need_f32("linear", y, "y");
    if (x.cols() != l.in_features() || y.cols() != l.out_features() || x.rows() != y.rows())
      bad("linear", "x " + x.shape_text() + " and y " + y.shape_text() + " do not fit a [" +
                        std::to_string(l.out_features()) + ", " + std::to_string(l.in_features()) + "] layer");
    cpu::linear(x.f32(), x.rows(), x.ld(), l.weights, l.bias.empty() ? nullptr : l.bias.data(), to_cpu(act), y.f32(),
                y.ld(), l.precision, pool_);
  }

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                 const AttentionParams& p) override {
    for (const Tensor* t : {&q, &k, &v, &out}) {
      need_f32("attention", *t, "q/k/v/out");
      if (t->ndim() != 3) bad("attention", "operands must be [B, L, heads*head_dim], got " + t->shape_text());
    }
    if (p.heads < 1 || q.dim(2) % p.heads != 0) bad("attention", "width not divisible into heads");
    if (k.shape() != v.shape() || q.dim(0) != k.dim(0) || q.dim(2) != k.dim(2) || out.shape() != q.shape())
      bad("attention", "q " + q.shape_text() + ", k " + k.shape_text() + ", v " + v.shape_text() + ", out " +
                           out.shape_text() + " do not agree");
    cpu::AttentionShape s;
    s.batch = q.dim(0);
    s.heads = p.heads;
    s.seq_q = q.dim(1);
    s.seq_kv = k.dim(1);
    s.head_dim = q.dim(2) / p.heads;
    s.scale = p.scale;
    s.causal = p.causal;
    if (p.bias != nullptr) {
      need_vector("attention", *p.bias, p.heads * s.seq_q * s.seq_kv, "bias");
      s.bias = p.bias->f32();
    }
    const int64_t hd = s.head_dim;
    auto operand = [&](const Tensor& t) {
      return cpu::AttentionOperand{t.f32(), t.stride(0), t.stride(1), hd};
    };
    cpu::attention(s, operand(q), operand(k), operand(v), {out.f32(), out.stride(0), out.stride(1), hd}, pool_);
  }

  void rope_tables(const float* host_ids, int64_t seq, const std::vector<int>& axes_dim, double theta,
                   const Tensor& cos, const Tensor& sin) override {
    int64_t half = 0;
    for (int a : axes_dim) half += a / 2;
    need_vector("rope_tables", cos, seq * half, "cos");
    need_vector("rope_tables", sin, seq * half, "sin");
    cpu::rope_tables(host_ids, seq, static_cast<int>(axes_dim.size()), axes_dim.data(), theta, cos.f32(), sin.f32());
  }

  void rope_apply(const Tensor& x, int64_t heads, const Tensor& cos, const Tensor& sin) override {
    need_f32("rope_apply", x, "x");
    const int64_t hd = x.cols() / heads;
    need_vector("rope_apply", cos, x.rows() * hd / 2, "cos");
    need_vector("rope_apply", sin, x.rows() * hd / 2, "sin");
    cpu::rope_apply(x.f32(), x.rows(), x.ld(), heads, hd, cos.f32(), sin.f32(), pool_);
  }

  void rms_norm_heads(const Tensor& x, int64_t heads, const Tensor& weight, float eps) override {
    need_f32("rms_norm_heads", x, "x");
    const int64_t hd = x.cols() / heads;
    need_vector("rms_norm_heads", weight, hd, "weight");
    cpu::rms_norm_heads(x.f32(), x.rows(), x.ld(), heads, hd, weight.f32(), eps, pool_);
  }

  void layernorm_modulate(const Tensor& x, const Tensor& shift, const Tensor& scale, float eps,
                          const Tensor& y) override {
    rows_op("layernorm_modulate", x, y);
    need_vector("layernorm_modulate", shift, x.cols(), "shift");
    need_vector("layernorm_modulate", scale, x.cols(), "scale");
    cpu::layernorm_modulate(x.f32(), x.rows(), x.cols(), x.ld(), shift.f32(), scale.f32(), eps, y.f32(), y.ld(), pool_);
  }

  void layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, float eps, const Tensor& y) override {
    rows_op("layernorm", x, y);
    need_vector("layernorm", gamma, x.cols(), "gamma");
    need_vector("layernorm", beta, x.cols(), "beta");
    cpu::layernorm_affine(x.f32(), x.rows(), x.cols(), x.ld(), gamma.f32(), beta.f32(), eps, y.f32(), y.ld(), pool_);
  }

  void rms_norm(const Tensor& x, const Tensor& weight, float eps, const Tensor& y) override {
    rows_op("rms_norm", x, y);
    need_vector("rms_norm", weight, x.cols(), "weight");
    cpu::rms_norm(x.f32(), x.rows(), x.cols(), x.ld(), weight.f32(), eps, y.f32(), y.ld(), pool_);
  }

  void gated_add(const Tensor& x, const Tensor& gate, const Tensor& y) override {
    rows_op("gated_add", x, y);
    need_vector("gated_add", gate, x.cols(), "gate");
    cpu::gated_add(x.f32(), x.rows(), x.cols(), x.ld(), gate.f32(), y.f32(), y.ld(), pool_);
  }

  void add(const Tensor& x, const Tensor& y) override {
    binary("add", x, y, [](float* a, const float* b, int64_t n, ThreadPool& pool) { cpu::add_inplace(a, b, n, pool); });
  }
  void mul(const Tensor& x, const Tensor& y) override {
    binary("mul", x, y, [](float* a, const float* b, int64_t n, ThreadPool& pool) { cpu::mul_inplace(a, b, n, pool); });
  }
  void gelu_tanh(const Tensor& x) override {
    unary("gelu_tanh", x, [](float* a, int64_t n, ThreadPool& pool) { cpu::gelu_tanh(a, n, pool); });
  }
  void silu(const Tensor& x) override {
    unary("silu", x, [](float* a, int64_t n, ThreadPool& pool) { cpu::silu(a, n, pool); });
  }
  void quick_gelu(const Tensor& x) override {
    unary("quick_gelu", x, [](float* a, int64_t n, ThreadPool& pool) { cpu::quick_gelu(a, n, pool); });
  }

  void embedding(const Tensor& table, const int32_t* ids, int64_t count, const Tensor& out) override {
    if (!dtype_is_float(table.dtype()) || !table.contiguous() || table.ndim() != 2)
      bad("embedding", "table must be a contiguous [vocab, hidden] float tensor");
    need_f32("embedding", out, "out");
    const int64_t hidden = table.dim(1);
    if (out.cols() != hidden || out.rows() != count) bad("embedding", "out " + out.shape_text() + " mismatch");
    const size_t row_bytes = static_cast<size_t>(hidden) * dtype_size(table.dtype());
    const auto* base = static_cast<const uint8_t*>(table.data());
    float* dst = out.f32();
    const int64_t ld = out.ld();
    pool_.parallel_for(
        count,
        [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r)
            convert(table.dtype(), base + static_cast<size_t>(ids[r]) * row_bytes, DType::F32, dst + r * ld,
                    static_cast<size_t>(hidden), Overflow::Ieee);
        },
        std::max<int64_t>(1, 16384 / hidden));
  }

  void relative_position_bias(const Tensor& table, const std::vector<int32_t>& bucket_of, int64_t q0, int64_t seq,
                              const Tensor& out) override {
    need_f32("relative_position_bias", table, "table");
    need_f32("relative_position_bias", out, "out");
    const int64_t heads = table.dim(1);
    if (!out.contiguous() || out.ndim() != 3 || out.dim(0) != heads || out.dim(2) != seq ||
        static_cast<int64_t>(bucket_of.size()) != 2 * seq - 1)
      bad("relative_position_bias", "out " + out.shape_text() + " is not [heads, rows, L]");
    const int64_t nq = out.dim(1);
    const float* t = table.f32();
    float* o = out.f32();
    pool_.parallel_for(heads * nq, [&](int64_t t0, int64_t t1) {
      for (int64_t task = t0; task < t1; ++task) {
        const int64_t h = task / nq, i = task % nq;
        float* row = o + (h * nq + i) * seq;
        const int32_t* b = bucket_of.data() + (seq - 1) - (q0 + i);  // b[j] = bucket(j - (q0 + i))
        for (int64_t j = 0; j < seq; ++j) row[j] = t[static_cast<size_t>(b[j]) * static_cast<size_t>(heads) + h];
      }
    });
  }

  // ---- image operations ----
  void conv2d(const Tensor& x, const ConvLayer& layer, const ConvGeometry& g, bool accumulate,
              const Tensor& y) override {
    const auto& c = static_cast<const CpuConv&>(layer);
    need_f32("conv2d", x, "x");
    need_f32("conv2d", y, "y");
    if (x.ndim() != 3 || !x.contiguous() || !y.contiguous() || x.dim(0) != c.in_channels())
      bad("conv2d", "x " + x.shape_text() + " is not a contiguous [" + std::to_string(c.in_channels()) + ", H, W]");
    cpu::Conv2dShape s;
    s.in_channels = c.in_channels();
    s.out_channels = c.out_channels();
    s.height = x.dim(1);
    s.width = x.dim(2);
    s.kernel_h = c.kernel_h();
    s.kernel_w = c.kernel_w();
    s.stride = g.stride;
    s.pad_top = g.pad_top;
    s.pad_bottom = g.pad_bottom;
    s.pad_left = g.pad_left;
    s.pad_right = g.pad_right;
    if (y.numel() != s.out_channels * s.out_height() * s.out_width())
      bad("conv2d", "y " + y.shape_text() + " does not hold the output");
    cpu::conv2d(x.f32(), 1, s, c.weights, c.bias.data(), cpu::Activation::None, accumulate, y.f32(), pool_);
  }

  void group_norm(const Tensor& x, int64_t groups, const Tensor& gamma, const Tensor& beta, float eps, bool silu,
                  const Tensor& y) override {
    need_f32("group_norm", x, "x");
    need_f32("group_norm", y, "y");
    if (!x.contiguous() || !y.contiguous() || x.numel() != y.numel()) bad("group_norm", "x and y must be contiguous");
    const int64_t channels = x.dim(0);
    need_vector("group_norm", gamma, channels, "gamma");
    need_vector("group_norm", beta, channels, "beta");
    cpu::group_norm(x.f32(), 1, channels, x.numel() / channels, groups, gamma.f32(), beta.f32(), eps, silu, y.f32(),
                    pool_);
  }

  void upsample_nearest2x(const Tensor& x, const Tensor& y) override {
    need_f32("upsample_nearest2x", x, "x");
    need_f32("upsample_nearest2x", y, "y");
    if (x.ndim() != 3 || !x.contiguous() || !y.contiguous() || y.numel() != 4 * x.numel())
      bad("upsample_nearest2x", "x " + x.shape_text() + ", y " + y.shape_text());
    cpu::upsample_nearest2x(x.f32(), x.dim(0), x.dim(1), x.dim(2), y.f32(), pool_);
  }

  // 32×32 blocks, rows of blocks in parallel.
  void transpose(const Tensor& src, const Tensor& dst, bool accumulate) override {
    need_f32("transpose", src, "src");
    need_f32("transpose", dst, "dst");
    const int64_t rows = src.rows(), cols = src.cols();
    if (dst.rows() != cols || dst.cols() != rows) bad("transpose", src.shape_text() + " into " + dst.shape_text());
    const float* s = src.f32();
    float* d = dst.f32();
    const int64_t lds = src.ld(), ldd = dst.ld();
    constexpr int64_t kB = 32;
    const int64_t row_blocks = (rows + kB - 1) / kB;
    pool_.parallel_for(row_blocks, [&](int64_t begin, int64_t end) {
      for (int64_t rb = begin; rb < end; ++rb) {
        const int64_t r0 = rb * kB, r1 = std::min(rows, r0 + kB);
        for (int64_t c0 = 0; c0 < cols; c0 += kB) {
          const int64_t c1 = std::min(cols, c0 + kB);
          for (int64_t c = c0; c < c1; ++c) {
            float* out = d + c * ldd;
            if (accumulate)
              for (int64_t r = r0; r < r1; ++r) out[r] += s[r * lds + c];
            else
              for (int64_t r = r0; r < r1; ++r) out[r] = s[r * lds + c];
          }
        }
      }
    });
  }

  void scale_latents(const Tensor& x, double scale, double shift, bool to_model, const Tensor& y) override {
    need_f32("scale_latents", x, "x");
    need_f32("scale_latents", y, "y");
    if (!x.contiguous() || !y.contiguous() || x.numel() != y.numel()) bad("scale_latents", "x and y must match");
    const float* s = x.f32();
    float* d = y.f32();
    const int64_t n = x.numel();
    if (to_model) {
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(static_cast<double>(s[i]) / scale + shift);
    } else {
      for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(scale * (static_cast<double>(s[i]) - shift));
    }
  }

 private:
  void rows_op(const std::string& op, const Tensor& x, const Tensor& y) {
    need_f32(op, x, "x");
    need_f32(op, y, "y");
    if (x.rows() != y.rows() || x.cols() != y.cols()) bad(op, "x " + x.shape_text() + " and y " + y.shape_text());
  }

  // Contiguous tensors: one flat call. Strided views: row by row, rows across the pool (the kernel's own
  // parallel_for then runs inline in its chunk: ThreadPool runs nested calls on the calling thread).
  template <typename Body>
  void binary(const std::string& op, const Tensor& x, const Tensor& y, Body body) {
    rows_op(op, x, y);
    if (x.contiguous() && y.contiguous()) {
      body(x.f32(), y.f32(), x.numel(), pool_);
      return;
    }
    const int64_t cols = x.cols(), ldx = x.ld(), ldy = y.ld();
    float* a = x.f32();
    const float* b = y.f32();
    pool_.parallel_for(x.rows(), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) body(a + r * ldx, b + r * ldy, cols, pool_);
    });
  }

  template <typename Body>
  void unary(const std::string& op, const Tensor& x, Body body) {
    need_f32(op, x, "x");
    if (x.contiguous()) {
      body(x.f32(), x.numel(), pool_);
      return;
    }
    const int64_t cols = x.cols(), ld = x.ld();
    float* a = x.f32();
    pool_.parallel_for(x.rows(), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) body(a + r * ld, cols, pool_);
    });
  }

  ThreadPool& pool_;
};

}  // namespace

std::shared_ptr<Backend> cpu_backend(ThreadPool* pool) {
  return std::make_shared<CpuBackend>(pool != nullptr ? *pool : ThreadPool::global());
}

}  // namespace fx::backend
