/*
 * fluxnative.h — the whole C ABI of FluxNative. This is the only header a caller sees.
 *
 * Conventions
 *   - Every name is prefixed `fx_` (functions, types) or `FX_` (constants).
 *   - Objects are opaque handles, created and destroyed in pairs (`fx_x_open` / `fx_x_close`,
 *     `fx_x_load` / `fx_x_free`).
 *     A destroy function accepts NULL and does nothing.
 *   - Every fallible call returns an `fx_status`. FX_OK is 0. On failure, `fx_last_error()` returns
 *     a message that names what went wrong (file, tensor, argument).
 *   - No C++ exception ever crosses this boundary: every entry point catches everything and
 *     turns it into a status.
 *   - Parameter and info structs start with `uint32_t struct_size`, which the caller sets to
 *     sizeof(struct) (use the `*_init` function). The library reads and writes only the fields the
 *     caller's size covers, so structs can grow without breaking older callers.
 *   - Buffers are owned by the caller unless a function says otherwise. Functions that return a
 *     variable-length string take (buffer, capacity, size_t* needed): they always store the
 *     required size including the terminating NUL in *needed, write the string when it fits, and
 *     return FX_ERR_BUFFER_TOO_SMALL when it does not. A NULL buffer with capacity 0 is a size query.
 *   - Strings are UTF-8 and NUL-terminated. Paths are UTF-8.
 *
 * Threading
 *   - `fx_last_error()` is thread-local: it reports the last failure on the calling thread and stays
 *     valid until that thread's next failing call.
 *   - Functions without a handle argument may be called from any thread at any time.
 *   - A checkpoint handle is immutable after `fx_checkpoint_open`: any number of threads may query it
 *     and read tensors from it at the same time. `fx_checkpoint_close` must not race with any other
 *     call on the same handle (the caller ensures no call is in flight).
 *   - Strings and pointers a handle hands out (tensor names, shapes) stay valid until it is closed.
 */
#ifndef FLUXNATIVE_H
#define FLUXNATIVE_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(FX_BUILDING_LIBRARY)
#    define FX_API __declspec(dllexport)
#  else
#    define FX_API __declspec(dllimport)
#  endif
#else
#  define FX_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Raised whenever a struct layout, an enum value or a function signature changes incompatibly.
 * The .NET binding refuses a library whose fx_abi_version() differs from the one it was built for. */
#define FX_ABI_VERSION 2u /* 2: fx_image_encode takes fx_image_encode_params */

/* ---------------------------------------------------------------------------------------------- */
/* Status and errors                                                                               */
/* ---------------------------------------------------------------------------------------------- */

typedef enum fx_status {
  FX_OK = 0,
  FX_ERR_INVALID_ARGUMENT = 1, /* a NULL where a value is needed, an out-of-range value, a bad struct_size */
  FX_ERR_OUT_OF_MEMORY = 2,    /* host or device allocation failed */
  FX_ERR_IO = 3,               /* a file could not be opened, mapped, read or written */
  FX_ERR_FORMAT = 4,           /* a file is corrupt, truncated or not what it claims (names file and tensor) */
  FX_ERR_NOT_FOUND = 5,        /* a tensor, file or device that was asked for does not exist */
  FX_ERR_UNSUPPORTED = 6,      /* valid input this build cannot handle (dtype, backend, model variant) */
  FX_ERR_BUFFER_TOO_SMALL = 7, /* the caller's buffer is too small; *needed says how large it must be */
  FX_ERR_CANCELLED = 8,        /* the operation was cancelled by the caller */
  FX_ERR_BACKEND = 9,          /* the compute backend (CUDA driver, kernel launch) failed */
  FX_ERR_INTERNAL = 10         /* a bug: an unexpected exception inside the library */
} fx_status;

/* The message of the calling thread's last failure ("" if none). Never NULL. */
FX_API const char* fx_last_error(void);

/* A short constant name for a status ("FX_ERR_FORMAT"); "FX_UNKNOWN_STATUS" for unknown values. */
FX_API const char* fx_status_name(int32_t status);

/* ---------------------------------------------------------------------------------------------- */
/* Version and build information                                                                   */
/* ---------------------------------------------------------------------------------------------- */

FX_API uint32_t fx_abi_version(void);

/* Library version, "MAJOR.MINOR.PATCH" (static string). */
FX_API const char* fx_version(void);

/* Backends compiled into this library (bit flags of fx_build_info.backends). */
#define FX_BACKEND_CPU 1u
#define FX_BACKEND_CUDA 2u

/* CPU features detected at run time on this machine (bit flags of fx_build_info.cpu_features).
 * The environment variable FX_CPU_ISA (portable, avx2, avx512, avx512-bf16), read once when the library
 * first asks, caps the instruction sets the kernels use, to run the paths of a lesser CPU; it never adds
 * what the machine lacks. An unknown value is reported on stderr and ignored. */
#define FX_CPU_AVX2 1u
#define FX_CPU_FMA 2u
#define FX_CPU_F16C 4u
#define FX_CPU_AVX512F 8u
#define FX_CPU_AVX512BW 16u
#define FX_CPU_AVX512VL 32u
#define FX_CPU_AVX512_BF16 64u
#define FX_CPU_AVX512_FP16 128u

typedef struct fx_build_info {
  uint32_t struct_size;
  uint32_t abi_version;
  uint32_t backends;               /* FX_BACKEND_* compiled in */
  uint32_t cpu_features;           /* FX_CPU_* the kernels use now: the machine's, less any above FX_CPU_ISA */
  int32_t cuda_toolkit_version;    /* e.g. 11080 for 11.8; 0 when built without CUDA */
  int32_t cuda_driver_version;     /* from the driver, e.g. 13000; 0 when no driver or no CUDA build */
  int32_t cuda_device_count;       /* usable devices now; 0 without driver/GPU or CUDA build */
  uint32_t cpu_features_machine;   /* FX_CPU_* the machine has, whatever FX_CPU_ISA says */
} fx_build_info;

FX_API void fx_build_info_init(fx_build_info* info);
FX_API fx_status fx_get_build_info(fx_build_info* info);

/* One GPU as the CUDA runtime sees it (`flux info`), and the memory FluxNative's arenas hold on it. */
typedef struct fx_cuda_device_info {
  uint32_t struct_size;
  char name[256];                   /* "NVIDIA H200", NUL-terminated */
  int32_t compute_major;            /* compute capability, e.g. 9 and 0 for sm_90 */
  int32_t compute_minor;
  int32_t multiprocessors;
  uint64_t total_memory_bytes;      /* the device's memory */
  uint64_t free_memory_bytes;       /* free now, device-wide (all processes), as the driver reports it */
  uint64_t arena_bytes_held;        /* held now by this process's CUDA backends on this device */
  uint64_t arena_bytes_peak;        /* the most they held at once since the library was loaded */
} fx_cuda_device_info;

FX_API void fx_cuda_device_info_init(fx_cuda_device_info* info);
/* Device `device` (0 .. fx_build_info.cuda_device_count - 1). FX_ERR_UNSUPPORTED in a build without CUDA;
 * FX_ERR_NOT_FOUND without a driver, without a GPU or for an index that is not a device. */
FX_API fx_status fx_cuda_device_info_get(int32_t device, fx_cuda_device_info* info);

/* The path of the loaded library file itself (as the dynamic loader resolved it). */
FX_API fx_status fx_library_path(char* buffer, size_t capacity, size_t* needed);

/* ---------------------------------------------------------------------------------------------- */
/* Data types                                                                                      */
/* ---------------------------------------------------------------------------------------------- */

typedef enum fx_dtype {
  FX_DTYPE_F32 = 0,
  FX_DTYPE_F16 = 1,
  FX_DTYPE_BF16 = 2,
  FX_DTYPE_F8_E4M3FN = 3, /* 1-4-3, bias 7, no infinity, NaN = S.1111.111, max 448 */
  FX_DTYPE_F8_E5M2 = 4,   /* 1-5-2, bias 15, IEEE-like: infinities and NaNs, max 57344 */
  FX_DTYPE_F64 = 5,
  FX_DTYPE_I64 = 6,
  FX_DTYPE_I32 = 7,
  FX_DTYPE_I16 = 8,
  FX_DTYPE_I8 = 9,
  FX_DTYPE_U8 = 10,
  FX_DTYPE_BOOL = 11,
  FX_DTYPE_U16 = 12,
  FX_DTYPE_U32 = 13,
  FX_DTYPE_U64 = 14,
  FX_DTYPE_COUNT_ = 15
} fx_dtype;

/* Bytes per element (0 for unknown values). */
FX_API size_t fx_dtype_size(int32_t dtype);
/* Name as safetensors spells it ("F32", "BF16", "F8_E4M3", ...); "?" for unknown values. */
FX_API const char* fx_dtype_name(int32_t dtype);

/* How f32 values beyond a format's largest finite value are converted. */
typedef enum fx_overflow {
  FX_OVERFLOW_SATURATE = 0, /* clamp to ±max finite (what quantisation wants); NaN stays NaN */
  FX_OVERFLOW_IEEE = 1      /* ±inf where the format has it (f16, bf16, e5m2), NaN for e4m3fn */
} fx_overflow;

/* Converts `count` elements between floating-point dtypes (f32, f64, f16, bf16, e4m3fn, e5m2),
 * rounding to nearest, ties to even. The buffers must not overlap. f16/bf16/f32 targets always use
 * FX_OVERFLOW_IEEE semantics (their conversions are exact or round to inf as IEEE defines);
 * `overflow` applies to the fp8 targets. */
FX_API fx_status fx_convert(int32_t src_dtype, const void* src, int32_t dst_dtype, void* dst, size_t count,
                            int32_t overflow);

/* ---------------------------------------------------------------------------------------------- */
/* Checkpoints (safetensors files, sharded folders)                                                */
/* ---------------------------------------------------------------------------------------------- */

typedef struct fx_checkpoint fx_checkpoint;

#define FX_MAX_DIMS 8

typedef struct fx_tensor_info {
  uint32_t struct_size;
  int32_t dtype;                 /* fx_dtype */
  const char* name;              /* owned by the checkpoint */
  const char* file;              /* the file holding the tensor; owned by the checkpoint */
  int32_t ndim;
  int32_t block_type;            /* 0, or a GGUF block-quantised tensor's ggml type id (8 = Q8_0, 12 = Q4_K, ...;
                                    docs/checkpoints.md): dtype is then F32, what its values read as, and
                                    byte_size is the blocks' size */
  int64_t shape[FX_MAX_DIMS];
  uint64_t byte_size;
  uint64_t file_offset;          /* absolute offset of the data in `file` */
} fx_tensor_info;

FX_API void fx_tensor_info_init(fx_tensor_info* info);

/* Opens a checkpoint and validates every header completely:
 *   - a `.safetensors` file (memory-mapped; tensor data is not read until asked for);
 *   - a GGUF file (by its magic; F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K tensors;
 *     its KVs are the metadata; fx_checkpoint_read_tensor decodes block-quantised tensors);
 *   - a `*.safetensors.index.json` file (the shards it names, in its folder);
 *   - a folder holding one index file, or exactly one `.safetensors` or `.gguf` file
 *     (a `config.json` beside them is kept and reported by fx_checkpoint_describe_json).
 * Errors name the file and, where one is at fault, the tensor. */
FX_API fx_status fx_checkpoint_open(const char* path, fx_checkpoint** out);
FX_API void fx_checkpoint_close(fx_checkpoint* checkpoint);

FX_API fx_status fx_checkpoint_tensor_count(const fx_checkpoint* checkpoint, size_t* count);
/* Tensors are sorted by name. */
FX_API fx_status fx_checkpoint_tensor_info(const fx_checkpoint* checkpoint, size_t index, fx_tensor_info* info);
/* FX_ERR_NOT_FOUND if no tensor has that name. */
FX_API fx_status fx_checkpoint_find(const fx_checkpoint* checkpoint, const char* name, size_t* index);

/* Copies tensor `index` into `dst`, converting to `dst_dtype` (same dtype: a plain copy; otherwise
 * both must be floating-point, overflow as FX_OVERFLOW_SATURATE for fp8 targets).
 * `dst_bytes` must be at least element_count * fx_dtype_size(dst_dtype). */
FX_API fx_status fx_checkpoint_read_tensor(const fx_checkpoint* checkpoint, size_t index, int32_t dst_dtype,
                                           void* dst, size_t dst_bytes);

/* A JSON document describing the checkpoint: what it is (kind, layout), the configuration inferred
 * from tensor names and shapes (and config.json when present), parameter count, dtypes, files and
 * the safetensors `__metadata__`. Schema: see docs in README ("flux inspect --json"). */
FX_API fx_status fx_checkpoint_describe_json(const fx_checkpoint* checkpoint, char* buffer, size_t capacity,
                                             size_t* needed);

/* ---------------------------------------------------------------------------------------------- */
/* Writing safetensors files                                                                       */
/* ---------------------------------------------------------------------------------------------- */

typedef struct fx_tensor_view {
  const char* name;
  int32_t dtype;
  int32_t ndim;
  int64_t shape[FX_MAX_DIMS];
  const void* data;              /* element_count * fx_dtype_size(dtype) bytes */
  uint64_t byte_size;            /* must equal element_count * fx_dtype_size(dtype) */
} fx_tensor_view;

/* Writes a safetensors file (tensors in the order given, 8-byte aligned data). `metadata_json` is
 * NULL or a JSON object of string values stored as `__metadata__`. The file is written to a
 * temporary name and renamed, so a failure never leaves a half-written file at `path`. */
FX_API fx_status fx_safetensors_write(const char* path, const fx_tensor_view* tensors, size_t count,
                                      const char* metadata_json);

/* ---------------------------------------------------------------------------------------------- */
/* Tiny random models with the published tensor names (tests, demos, benchmarks)                   */
/* ---------------------------------------------------------------------------------------------- */

typedef enum fx_model_kind {
  FX_MODEL_UNKNOWN = 0,
  FX_MODEL_FLUX_TRANSFORMER = 1,
  FX_MODEL_AUTOENCODER = 2,
  FX_MODEL_T5_ENCODER = 3,
  FX_MODEL_CLIP_TEXT = 4
} fx_model_kind;

typedef enum fx_layout {
  FX_LAYOUT_BFL = 1,       /* Black Forest Labs single files: flux1-dev.safetensors, ae.safetensors */
  FX_LAYOUT_DIFFUSERS = 2  /* Hugging Face folders: transformer/, vae/, text_encoder/, text_encoder_2/ */
} fx_layout;

/* The widths a random model is written with. FX_SHAPES_PUBLISHED: every tensor of FLUX.1's published shapes
 * (transformer 3072 wide, 24 heads of 128, text 4096 and pooled 768 wide, 19 double + 38 single blocks; T5-XXL
 * 4096/64 heads/d_ff 10240/24 layers; CLIP-L 768/12 heads/3072/12 layers; the autoencoder 128 wide, 4 levels of
 * 2 ResnetBlocks), for benchmarks on weights nobody has to download. hidden_size and num_heads must then be 0;
 * depth and depth_single still cut the depth (0 = the published depth). */
typedef enum fx_model_shapes {
  FX_SHAPES_TINY = 0,
  FX_SHAPES_PUBLISHED = 1
} fx_model_shapes;

typedef struct fx_tiny_model_params {
  uint32_t struct_size;
  int32_t kind;            /* fx_model_kind */
  int32_t layout;          /* fx_layout; T5 and CLIP exist only as FX_LAYOUT_DIFFUSERS folders */
  int32_t dtype;           /* weight dtype: FX_DTYPE_F32, F16 or BF16 */
  int32_t guidance;        /* flux transformer: 1 = dev (guidance_in), 0 = schnell */
  int32_t shards;          /* diffusers layout: number of shard files (1 = single file + no index) */
  uint64_t seed;           /* weights are a deterministic function of the seed */
  int32_t hidden_size;     /* 0 = the tiny default of the kind (flux: 64) */
  int32_t num_heads;       /* 0 = default (flux: 2) */
  int32_t depth;           /* 0 = default (flux: 2 double blocks; ae: 2 resolution levels, ch_mult
                              1, 2, 4, 4, 4, ... cut to that many; t5/clip: 2 layers) */
  int32_t depth_single;    /* 0 = default (flux: 3 single blocks; ae: num_res_blocks 1) */
  int32_t shapes;          /* fx_model_shapes: FX_SHAPES_TINY (0, the default) or FX_SHAPES_PUBLISHED */
} fx_tiny_model_params;

FX_API void fx_tiny_model_params_init(fx_tiny_model_params* params);

/* Writes a random model of the given kind. FX_LAYOUT_BFL writes one file at `path`;
 * FX_LAYOUT_DIFFUSERS creates the folder `path` with config.json and the weight file(s). */
FX_API fx_status fx_tiny_model_write(const fx_tiny_model_params* params, const char* path);

/* ---------------------------------------------------------------------------------------------- */
/* The FLUX transformer (docs/flux-model.md §5), CPU backend                                             */
/* ---------------------------------------------------------------------------------------------- */

typedef struct fx_flux_model fx_flux_model;

typedef enum fx_weight_format {
  FX_WEIGHTS_AS_STORED = 0, /* f32 and bf16 kept in the file's dtype; f16 widened to f32 */
  FX_WEIGHTS_F32 = 1,       /* every linear weight widened to f32 at load */
  FX_WEIGHTS_BF16 = 2,      /* rounded to bf16 at load */
  FX_WEIGHTS_FP8 = 3        /* e4m3fn with one scale per output channel, quantised at load */
} fx_weight_format;

/* Precision of the activations entering the linear layers. */
typedef enum fx_activation_precision {
  FX_ACTIVATIONS_F32 = 0,  /* exact: f32 activations on every path (the reference-matching default) */
  FX_ACTIVATIONS_BF16 = 1  /* bf16 weights meet bf16-rounded activations in the CPU's bf16 dot products
                              (AVX512-BF16) where it has them: faster, ~1e-2 relative error; other
                              weight dtypes and CPUs without it stay exact */
} fx_activation_precision;

/* A LoRA file merged into a model's weights at load (docs/lora.md): an open checkpoint (fx_checkpoint_open;
 * it may be closed once the load returns) and the strength it is applied with (1: as trained; 0.5 half;
 * negative subtracts). The file's modules may be named as BFL/ComfyUI, diffusers/PEFT, kohya or XLabs
 * name them; every tensor must map onto the model, else the load fails naming it. */
typedef struct fx_lora {
  const fx_checkpoint* checkpoint;
  float strength;
} fx_lora;

typedef struct fx_flux_load_params {
  uint32_t struct_size;
  int32_t weight_format;    /* fx_weight_format */
  int32_t num_threads;      /* 0: the process-wide pool (one thread per core, or FX_NUM_THREADS) */
  int32_t activations;      /* fx_activation_precision */
  const char* device;       /* where the model lives and runs: NULL or "cpu", "cuda", "cuda:N" (see below) */
  const fx_lora* loras;     /* optional: lora_count LoRAs merged into the linear weights before they are packed
                               (and quantised, for FX_WEIGHTS_FP8), in order */
  int32_t lora_count;
} fx_flux_load_params;

FX_API void fx_flux_load_params_init(fx_flux_load_params* params);

/* Loads the transformer from an open checkpoint (BFL file or diffusers folder; configuration inferred
 * from it). Weights are packed once into the device's layout (on the CPU: the kernels' panels in their
 * dtype, reordered, never dequantized), so the checkpoint handle may be closed right after.
 * FX_ERR_UNSUPPORTED if the checkpoint is not a FLUX transformer.
 * Devices (all three model kinds): "cpu" (also NULL) or "cuda" / "cuda:N". A device that cannot be used
 * is an error naming what is missing, never a silent CPU run: FX_ERR_INVALID_ARGUMENT for an unknown
 * name, FX_ERR_UNSUPPORTED for a build without CUDA (or a CUDA backend that cannot yet run the model),
 * FX_ERR_NOT_FOUND for no driver, no GPU, or no GPU N. Inputs and outputs are host memory either way. */
FX_API fx_status fx_flux_model_load(const fx_checkpoint* checkpoint, const fx_flux_load_params* params,
                                    fx_flux_model** out);
FX_API void fx_flux_model_free(fx_flux_model* model);

/* The model's configuration as JSON: in_channels, out_channels, hidden_size, num_heads, head_dim,
 * mlp_hidden, context_in_dim, vec_in_dim, depth, depth_single, guidance_embed, axes_dim, theta. */
FX_API fx_status fx_flux_model_config_json(const fx_flux_model* model, char* buffer, size_t capacity, size_t* needed);

/* Step caching (the speed modes): one sample's memory of its previous denoising step. Every step runs the first
 * head_blocks blocks (double-stream blocks first, then single-stream ones) and compares their residual on the
 * image tokens with the one of the last step that ran every block: when the relative L1 change is under
 * threshold, the blocks in the middle are not run and their residual from that step is added instead; the last
 * tail_blocks blocks always run. The first warmup_steps and last final_steps of total_steps always run every
 * block, and at most max_consecutive steps in a row reuse. threshold 0 never reuses: the output is then
 * bit-identical to a forward without a cache. A cache belongs to one sample of one run on one model: each
 * forward it is given counts as that sample's next step (fx_flux_step_cache_reset starts over); passing it with
 * another model or token count is an error. Free caches before their model. */
typedef struct fx_flux_step_cache fx_flux_step_cache;

typedef struct fx_flux_step_cache_params {
  uint32_t struct_size;
  float threshold;         /* >= 0; 0 = never reuse */
  int32_t head_blocks;     /* >= 1 (default 1) */
  int32_t tail_blocks;     /* >= 0 (default 0) */
  int32_t warmup_steps;    /* >= 0 (default 1) */
  int32_t final_steps;     /* >= 0 (default 1) */
  int32_t max_consecutive; /* >= 1 (default 3) */
  int32_t total_steps;     /* >= 1, required: the steps the sample will run */
} fx_flux_step_cache_params;

FX_API void fx_flux_step_cache_params_init(fx_flux_step_cache_params* params);
/* FX_ERR_INVALID_ARGUMENT names the field out of range. */
FX_API fx_status fx_flux_step_cache_create(const fx_flux_model* model, const fx_flux_step_cache_params* params,
                                           fx_flux_step_cache** out);
FX_API void fx_flux_step_cache_free(fx_flux_step_cache* cache);
FX_API fx_status fx_flux_step_cache_reset(fx_flux_step_cache* cache);
/* Steps seen since creation or reset, how many of them reused the middle blocks, and the relative change measured
 * at the last step (NaN before there is a reference); any of them may be NULL. */
FX_API fx_status fx_flux_step_cache_stats(const fx_flux_step_cache* cache, int32_t* steps, int32_t* reused_steps,
                                          double* last_change);

/* One forward pass. All tensors f32, row-major, shapes as in docs/flux-model.md §5:
 * img [B, Limg, in_channels], img_ids [B, Limg, 3], txt [B, Ltxt, context_in_dim], txt_ids [B, Ltxt, 3],
 * y [B, vec_in_dim], timesteps [B] (t in [0, 1]; the model multiplies by 1000), guidance [B] (dev; NULL
 * allowed for schnell). Writes out [B, Limg, out_channels]; out_count must be exactly that many floats.
 * A model may run one forward at a time (calls on one model from several threads are serialised). */
typedef struct fx_flux_inputs {
  uint32_t struct_size;
  int32_t batch;
  int32_t img_tokens;
  int32_t txt_tokens;
  const float* img;
  const float* img_ids;
  const float* txt;
  const float* txt_ids;
  const float* y;
  const float* timesteps;
  const float* guidance;
  const volatile int32_t* cancel; /* optional: the forward stops with FX_ERR_CANCELLED soon after another
                                     thread sets *cancel to non-zero (checked between blocks) */
  /* Optional, [batch] each (see fx_flux_step_cache below): row b's step cache (NULL entries run every block;
   * the same cache twice is refused), and where to write how many transformer blocks row b ran. */
  fx_flux_step_cache* const* step_caches;
  int32_t* blocks_computed;
} fx_flux_inputs;

FX_API void fx_flux_inputs_init(fx_flux_inputs* inputs);
FX_API fx_status fx_flux_forward(fx_flux_model* model, const fx_flux_inputs* inputs, float* out, size_t out_count);

/* ---------------------------------------------------------------------------------------------- */
/* Text encoders: CLIP ViT-L/14 text tower and T5-v1.1 encoder (docs/flux-model.md §3), CPU backend      */
/* ---------------------------------------------------------------------------------------------- */

typedef struct fx_text_model fx_text_model;

typedef struct fx_text_load_params {
  uint32_t struct_size;
  int32_t weight_format; /* fx_weight_format for the linear layers (embeddings and norms stay as they are) */
  int32_t num_threads;   /* 0: the process-wide pool */
  const char* device;    /* NULL or "cpu", "cuda", "cuda:N", as in fx_flux_load_params */
  const char* kind;      /* NULL: the encoder the checkpoint holds; "clip_text" or "t5_encoder": that one, from a
                            file holding several (an engine, an "all in one" file), else FX_ERR_UNSUPPORTED */
} fx_text_load_params;

FX_API void fx_text_load_params_init(fx_text_load_params* params);

/* Loads a CLIP text encoder (diffusers text_encoder/) or a T5 encoder (text_encoder_2/; sharded with
 * index), which one inferred from the checkpoint; configuration from config.json, else from shapes.
 * Linear weights are packed in their dtype (never widened to f32 unless asked); the embedding table
 * stays memory-mapped and only looked-up rows are converted. The checkpoint handle may be closed right
 * after. FX_ERR_UNSUPPORTED for anything else. */
FX_API fx_status fx_text_model_load(const fx_checkpoint* checkpoint, const fx_text_load_params* params,
                                    fx_text_model** out);
FX_API void fx_text_model_free(fx_text_model* model);

/* JSON: kind ("clip_text" | "t5_encoder"), vocab_size, hidden_size, num_layers, num_heads, head_dim,
 * intermediate_size, max_positions (CLIP; 0 for T5), num_buckets and max_distance (T5), eps. */
FX_API fx_status fx_text_model_config_json(const fx_text_model* model, char* buffer, size_t capacity, size_t* needed);

/* Runs the encoder on token ids [B, L] (no attention mask, as FLUX uses them). Writes the last hidden
 * state [B, L, hidden_size] (after the final norm) to `hidden` (may be NULL, with count 0, when not wanted) and, for
 * CLIP, the pooled vector [B, hidden_size] (the final hidden state at the first occurrence of the
 * largest id of each row, i.e. the first <|endoftext|>) to `pooled` (NULL for T5, or when not wanted).
 * Counts must be exact. CLIP needs L <= max_positions. An id outside [0, vocab_size) is
 * FX_ERR_INVALID_ARGUMENT naming the row and position. `cancel` as in fx_flux_inputs. */
FX_API fx_status fx_text_encode(fx_text_model* model, const int32_t* ids, int32_t batch, int32_t length,
                                float* hidden, size_t hidden_count, float* pooled, size_t pooled_count,
                                const volatile int32_t* cancel);

/* ---------------------------------------------------------------------------------------------- */
/* Engine files (docs/engines.md): every component's weights packed as a backend runs them             */
/* ---------------------------------------------------------------------------------------------- */

/* A file carried inside an engine (the tokenizer files), stored as the U8 tensor "files/<name>". */
typedef struct fx_engine_file {
  const char* name;
  const void* data;
  size_t size;
} fx_engine_file;

typedef struct fx_engine_build_params {
  uint32_t struct_size;
  const fx_checkpoint* transformer; /* required; the others are optional */
  const fx_checkpoint* autoencoder;
  const fx_checkpoint* clip;
  const fx_checkpoint* t5;
  int32_t precision;    /* the transformer's linear layers: FX_WEIGHTS_BF16 (default) or FX_WEIGHTS_FP8 (e4m3 with
                           per-output-channel scales; the embedders, modulations and final layer stay bf16) */
  int32_t t5_precision; /* FX_WEIGHTS_AS_STORED (default), FX_WEIGHTS_BF16 or FX_WEIGHTS_FP8 */
  const char* device;   /* the backend the engine is for: NULL or "cpu" (the only one with an engine layout yet) */
  const char* build_json; /* optional JSON object kept in the engine as "build" (sources, hashes, quality) */
  const fx_engine_file* files;
  int32_t file_count;
  int32_t num_threads;  /* 0: the process-wide pool */
} fx_engine_build_params;

FX_API void fx_engine_build_params_init(fx_engine_build_params* params);

/* Loads each component in turn (as fx_flux_model_load etc. would, on `device`), writes its weights in the
 * backend's packed layout to `path` (through path + ".tmp", renamed when complete) and frees it before the next.
 * The result opens with fx_checkpoint_open and loads with fx_flux_model_load, fx_text_model_load (kind
 * "clip_text" / "t5_encoder") and fx_ae_model_load as a memory map: no repacking or requantising; its
 * description (fx_checkpoint_describe_json) has an "engine" object (format version, builder, target layout,
 * precision, each component and layer). Loading an engine with a weight format other than as-stored, with a LoRA,
 * or on a backend with another layout is refused naming why. */
FX_API fx_status fx_engine_build(const fx_engine_build_params* params, const char* path);

/* Replaces the "build" object of the engine at `path` with `build_json` (a JSON object: e.g. the quality check's
 * results, known only once the engine exists), in place: the header is rewritten within the space it has (the
 * builder leaves room), the weights are not touched. FX_ERR_FORMAT when `path` is not an engine,
 * FX_ERR_INVALID_ARGUMENT for JSON that is not an object or does not fit. */
FX_API fx_status fx_engine_amend_build_json(const char* path, const char* build_json);

/* ---------------------------------------------------------------------------------------------- */
/* Sampling helpers (docs/flux-model.md §4.3, §6.2)                                                      */
/* ---------------------------------------------------------------------------------------------- */

/* 2x2 patch packing: latents [B, C, h, w] -> packed [B, (h/2)*(w/2), 4*C] with token
 * n = (y/2)*(w/2) + x/2 and channel k = 4*c + 2*(y%2) + (x%2). h and w must be even; both counts
 * must be exactly B*C*h*w. Unpacking is the exact inverse. */
FX_API fx_status fx_latents_pack(const float* latents, int32_t batch, int32_t channels, int32_t height,
                                 int32_t width, float* packed, size_t count);
FX_API fx_status fx_latents_unpack(const float* packed, int32_t batch, int32_t channels, int32_t height,
                                   int32_t width, float* latents, size_t count);

/* One Euler step of the flow ODE in float32: x[i] += dt * velocity[i] (dt = t_next - t_cur < 0). */
FX_API fx_status fx_euler_step(float* x, const float* velocity, size_t count, float dt);

/* ---------------------------------------------------------------------------------------------- */
/* The autoencoder (docs/flux-model.md §7), CPU backend                                                  */
/* ---------------------------------------------------------------------------------------------- */

typedef struct fx_ae_model fx_ae_model;

typedef struct fx_ae_load_params {
  uint32_t struct_size;
  int32_t num_threads; /* 0: the process-wide pool */
  const char* device;  /* NULL or "cpu", "cuda", "cuda:N", as in fx_flux_load_params */
} fx_ae_load_params;

FX_API void fx_ae_load_params_init(fx_ae_load_params* params);

/* Loads the autoencoder from an open checkpoint: a BFL ae.safetensors or a diffusers vae/ folder
 * (configuration inferred from it; the latent scale and shift from config.json when there is one,
 * else the published 0.3611 and 0.1159). Weights are held in float32. Loads the decoder and the
 * encoder, whichever the checkpoint has. FX_ERR_UNSUPPORTED if it is not an autoencoder. */
FX_API fx_status fx_ae_model_load(const fx_checkpoint* checkpoint, const fx_ae_load_params* params,
                                  fx_ae_model** out);
FX_API void fx_ae_model_free(fx_ae_model* model);

/* JSON: in_channels, out_channels, ch, ch_mult, num_res_blocks, z_channels, downscale (pixels per
 * latent cell, 2^(len(ch_mult)-1)), scale_factor, shift_factor, has_encoder, has_decoder. */
FX_API fx_status fx_ae_model_config_json(const fx_ae_model* model, char* buffer, size_t capacity, size_t* needed);

/* Both directions return FX_ERR_UNSUPPORTED when the checkpoint lacks that half (decoder, encoder).
 * Decodes FLUX latents [B, z_channels, height, width] (normalised, as the transformer sees them; the
 * model applies z/scale + shift first) into pixels [B, out_channels, height*downscale,
 * width*downscale], float32, nominally in [-1, 1], not clamped. pixel_count must be exactly that
 * many floats. `cancel` is optional (see fx_flux_inputs.cancel). */
FX_API fx_status fx_ae_decode(fx_ae_model* model, const float* latents, int32_t batch, int32_t height,
                              int32_t width, float* pixels, size_t pixel_count, const volatile int32_t* cancel);

/* fx_ae_decode in overlapping tiles of tile x tile latent cells (e.g. 64 = 512 pixels) that overlap by `overlap`
 * cells (1 to tile/2; e.g. 8), blended linearly across the overlaps: memory grows with the tile instead of the image
 * (the decoder's widest buffers are 128 channels at the output size, 2 GiB each at 2048x2048). Close to fx_ae_decode,
 * not equal: each tile's normalisations see that tile. tile <= 0, or an image within one tile, is fx_ae_decode. */
FX_API fx_status fx_ae_decode_tiled(fx_ae_model* model, const float* latents, int32_t batch, int32_t height,
                                    int32_t width, int32_t tile, int32_t overlap, float* pixels, size_t pixel_count,
                                    const volatile int32_t* cancel);

/* Encodes pixels [B, in_channels, height, width] in [-1, 1] (height and width multiples of
 * downscale) into normalised FLUX latents [B, z_channels, height/downscale, width/downscale]:
 * scale * (posterior mean - shift). */
FX_API fx_status fx_ae_encode(fx_ae_model* model, const float* pixels, int32_t batch, int32_t height,
                              int32_t width, float* latents, size_t latent_count, const volatile int32_t* cancel);

/* ---------------------------------------------------------------------------------------------- */
/* Images: 8-bit conversion and files (libpng, libjpeg-turbo, libwebp)                             */
/* ---------------------------------------------------------------------------------------------- */

/* Bytes the library allocated (an encoded file, decoded pixels). Owned by the caller: fx_blob_free. */
typedef struct fx_blob fx_blob;
FX_API fx_status fx_blob_data(const fx_blob* blob, const uint8_t** data, size_t* size);
FX_API void fx_blob_free(fx_blob* blob);

typedef enum fx_pixel_rounding {
  FX_PIXELS_ROUND = 0,   /* round(127.5 * (x + 1)) in float32, ties to even (as numpy), as diffusers */
  FX_PIXELS_TRUNCATE = 1 /* truncate(127.5 * (x + 1)), as BFL (PyTorch .byte()) */
} fx_pixel_rounding;

/* Model pixels [3, height, width] (planar float32, nominally [-1, 1]; clamped here, NaN -> 0) into
 * interleaved 8-bit RGB [height, width, 3]. rgb_size must be exactly height*width*3. */
FX_API fx_status fx_pixels_to_rgb8(const float* pixels, int32_t width, int32_t height, int32_t rounding,
                                   uint8_t* rgb, size_t rgb_size);
/* The inverse direction, for the encoder: rgb [height, width, 3] -> [3, height, width], x/127.5 - 1. */
FX_API fx_status fx_rgb8_to_pixels(const uint8_t* rgb, int32_t width, int32_t height, float* pixels,
                                   size_t pixel_count);

typedef enum fx_image_format {
  FX_IMAGE_PNG = 1,  /* lossless; quality ignored */
  FX_IMAGE_JPEG = 2, /* libjpeg-turbo, 4:2:0 below quality 90, 4:4:4 from 90 */
  FX_IMAGE_WEBP = 3  /* libwebp, lossy; quality 100 is still lossy */
} fx_image_format;

/* The longest parameters_text, in UTF-8 bytes: what always fits one JPEG Exif segment as UTF-16. */
#define FX_IMAGE_MAX_PARAMETERS_BYTES 32000

typedef struct fx_image_encode_params {
  uint32_t struct_size;
  int32_t format;              /* fx_image_format (init: FX_IMAGE_PNG) */
  int32_t quality;             /* 1..100 for JPEG and WebP; PNG accepts 0..100 and ignores it (init: 80) */
  int32_t reserved;            /* must be 0 (keeps the pointer below at one offset on every platform) */
  const char* parameters_text; /* NULL or "": none. Otherwise the generation parameters, UTF-8, at most
                                  FX_IMAGE_MAX_PARAMETERS_BYTES bytes, in AUTOMATIC1111's "parameters"
                                  layout (prompt, then "Steps: 28, Sampler: Euler, ..."), stored as:
                                  PNG: a tEXt chunk "parameters" (Latin-1) before IDAT, or an uncompressed
                                  iTXt chunk (UTF-8) when the text is not all Latin-1;
                                  JPEG: an APP1 Exif segment, Exif IFD UserComment "UNICODE\0" + UTF-16BE;
                                  WebP: the same Exif (TIFF, big-endian) in an EXIF chunk (VP8X file). */
} fx_image_encode_params;

FX_API void fx_image_encode_params_init(fx_image_encode_params* params);

/* Encodes interleaved 8-bit RGB [height, width, 3] as a file in memory. Sides 1..16384 (WebP: 16383).
 * PNG is zlib level 6. FX_ERR_INVALID_ARGUMENT for a bad format or quality, and for a parameters_text
 * that is too long or not valid UTF-8 (nothing is cut or replaced silently). */
FX_API fx_status fx_image_encode(const uint8_t* rgb, int32_t width, int32_t height,
                                 const fx_image_encode_params* params, fx_blob** out);
/* Decodes a PNG, JPEG or WebP file in memory (format from its signature) into interleaved 8-bit RGB
 * (alpha dropped, grey expanded). All four outputs are required; they are zeroed on failure.
 * FX_ERR_FORMAT for anything else, a corrupt or truncated file, or a side above 16384 (checked before
 * any pixel memory is allocated); FX_ERR_UNSUPPORTED for animated WebP. */
FX_API fx_status fx_image_decode(const void* data, size_t size, int32_t* width, int32_t* height, int32_t* format,
                                 fx_blob** rgb);

/* ---------------------------------------------------------------------------------------------- */
/* ABI self-description (for binding layout tests)                                                 */
/* ---------------------------------------------------------------------------------------------- */

/* sizeof(struct_name) as this library was compiled, e.g. "fx_tensor_info". */
FX_API fx_status fx_abi_struct_size(const char* struct_name, size_t* size);
/* offsetof(struct_name, field_name) as this library was compiled. */
FX_API fx_status fx_abi_field_offset(const char* struct_name, const char* field_name, size_t* offset);

/* Test hook: throws a C++ exception inside the library so bindings can check that no exception
 * escapes. kind 0: std::runtime_error -> FX_ERR_INTERNAL; 1: std::bad_alloc -> FX_ERR_OUT_OF_MEMORY;
 * 2: a non-std exception (an int) -> FX_ERR_INTERNAL. Any other kind: FX_ERR_INVALID_ARGUMENT. */
FX_API fx_status fx_debug_throw(int32_t kind);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* FLUXNATIVE_H */
