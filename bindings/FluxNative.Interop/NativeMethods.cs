using System.Runtime.InteropServices;

namespace FluxNative.Interop;

/// <summary>
/// One declaration per function of <c>native/include/fluxnative.h</c>, in header order.
/// <c>const char*</c> results are static or thread-local library strings that must not be freed,
/// so they come back as <c>byte*</c> (a string-marshalled return would free them). <c>size_t</c> is
/// <see cref="nuint"/>.
/// </summary>
internal static unsafe partial class NativeMethods
{
    /// <summary>The name every declaration binds to; <see cref="FluxNativeLibrary"/> resolves it.</summary>
    public const string LibraryName = "fluxnative";

    /// <summary><c>FX_MAX_DIMS</c>.</summary>
    public const int MaxDims = 8;

    /// <summary><c>FX_IMAGE_MAX_PARAMETERS_BYTES</c>: the longest generation-parameters text an image file takes, in UTF-8 bytes.</summary>
    public const int MaxParametersBytes = 32000;

    // Registering the resolver loads nothing: the library is loaded (and its ABI checked) by the
    // resolver on the first call, or earlier by FluxNativeLibrary.EnsureLoaded/Diagnose. Doing it here
    // guarantees it happens before any declaration below is bound, whichever is called first.
    static NativeMethods() => FluxNativeLibrary.InstallResolver();

    // ---- Status and errors ----------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial byte* fx_last_error();

    [LibraryImport(LibraryName)]
    public static partial byte* fx_status_name(int status);

    // ---- Version and build information ----------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial uint fx_abi_version();

    [LibraryImport(LibraryName)]
    public static partial byte* fx_version();

    [LibraryImport(LibraryName)]
    public static partial void fx_build_info_init(FxBuildInfo* info);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_get_build_info(FxBuildInfo* info);

    [LibraryImport(LibraryName)]
    public static partial void fx_cuda_device_info_init(FxCudaDeviceInfo* info);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_cuda_device_info_get(int device, FxCudaDeviceInfo* info);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_library_path(byte* buffer, nuint capacity, nuint* needed);

    // ---- Data types -----------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial nuint fx_dtype_size(int dtype);

    [LibraryImport(LibraryName)]
    public static partial byte* fx_dtype_name(int dtype);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_convert(int srcDType, void* src, int dstDType, void* dst, nuint count, int overflow);

    // ---- Checkpoints ----------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_tensor_info_init(FxTensorInfo* info);

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_checkpoint_open(string path, out CheckpointHandle checkpoint);

    /// <summary>Called only by <see cref="CheckpointHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_checkpoint_close(IntPtr checkpoint);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_checkpoint_tensor_count(CheckpointHandle checkpoint, out nuint count);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_checkpoint_tensor_info(CheckpointHandle checkpoint, nuint index, FxTensorInfo* info);

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_checkpoint_find(CheckpointHandle checkpoint, string name, out nuint index);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_checkpoint_read_tensor(CheckpointHandle checkpoint, nuint index, int dstDType, void* dst, nuint dstBytes);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_checkpoint_describe_json(CheckpointHandle checkpoint, byte* buffer, nuint capacity, nuint* needed);

    // ---- Writing safetensors files --------------------------------------------------------------

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_safetensors_write(string path, FxTensorView* tensors, nuint count, string? metadataJson);

    // ---- Tiny random models ---------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_tiny_model_params_init(FxTinyModelParams* parameters);

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_tiny_model_write(FxTinyModelParams* parameters, string path);

    // ---- The FLUX transformer -------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_flux_load_params_init(FxFluxLoadParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_model_load(CheckpointHandle checkpoint, FxFluxLoadParams* parameters, out FluxModelHandle model);

    /// <summary>Called only by <see cref="FluxModelHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_flux_model_free(IntPtr model);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_model_config_json(FluxModelHandle model, byte* buffer, nuint capacity, nuint* needed);

    [LibraryImport(LibraryName)]
    public static partial void fx_flux_inputs_init(FxFluxInputs* inputs);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_forward(FluxModelHandle model, FxFluxInputs* inputs, float* output, nuint outputCount);

    [LibraryImport(LibraryName)]
    public static partial void fx_flux_step_cache_params_init(FxFluxStepCacheParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_step_cache_create(FluxModelHandle model, FxFluxStepCacheParams* parameters, out FluxStepCacheHandle cache);

    /// <summary>Called only by <see cref="FluxStepCacheHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_flux_step_cache_free(IntPtr cache);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_step_cache_reset(FluxStepCacheHandle cache);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_flux_step_cache_stats(FluxStepCacheHandle cache, int* steps, int* reusedSteps, double* lastChange);

    // ---- Engine files ----------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_engine_build_params_init(FxEngineBuildParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_engine_build(FxEngineBuildParams* parameters, byte* path);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_engine_amend_build_json(byte* path, byte* buildJson);

    // ---- Text encoders ---------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_text_load_params_init(FxTextLoadParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_text_model_load(CheckpointHandle checkpoint, FxTextLoadParams* parameters, out TextModelHandle model);

    /// <summary>Called only by <see cref="TextModelHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_text_model_free(IntPtr model);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_text_model_config_json(TextModelHandle model, byte* buffer, nuint capacity, nuint* needed);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_text_encode(TextModelHandle model, int* ids, int batch, int length, float* hidden, nuint hiddenCount, float* pooled, nuint pooledCount, int* cancel);

    // ---- Sampling helpers ------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_latents_pack(float* latents, int batch, int channels, int height, int width, float* packed, nuint count);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_latents_unpack(float* packed, int batch, int channels, int height, int width, float* latents, nuint count);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_euler_step(float* x, float* velocity, nuint count, float dt);

    // ---- The autoencoder ------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial void fx_ae_load_params_init(FxAeLoadParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_ae_model_load(CheckpointHandle checkpoint, FxAeLoadParams* parameters, out AeModelHandle model);

    /// <summary>Called only by <see cref="AeModelHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_ae_model_free(IntPtr model);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_ae_model_config_json(AeModelHandle model, byte* buffer, nuint capacity, nuint* needed);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_ae_decode_tiled(AeModelHandle model, float* latents, int batch, int height, int width, int tile, int overlap, float* pixels, nuint pixelCount, int* cancel);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_ae_decode(AeModelHandle model, float* latents, int batch, int height, int width, float* pixels, nuint pixelCount, int* cancel);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_ae_encode(AeModelHandle model, float* pixels, int batch, int height, int width, float* latents, nuint latentCount, int* cancel);

    // ---- Images ---------------------------------------------------------------------------------

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_blob_data(BlobHandle blob, byte** data, nuint* size);

    /// <summary>Called only by <see cref="BlobHandle.ReleaseHandle"/>.</summary>
    [LibraryImport(LibraryName)]
    public static partial void fx_blob_free(IntPtr blob);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_pixels_to_rgb8(float* pixels, int width, int height, int rounding, byte* rgb, nuint rgbSize);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_rgb8_to_pixels(byte* rgb, int width, int height, float* pixels, nuint pixelCount);

    [LibraryImport(LibraryName)]
    public static partial void fx_image_encode_params_init(FxImageEncodeParams* parameters);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_image_encode(byte* rgb, int width, int height, FxImageEncodeParams* parameters, out BlobHandle blob);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_image_decode(void* data, nuint size, int* width, int* height, int* format, out BlobHandle rgb);

    // ---- ABI self-description -------------------------------------------------------------------

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_abi_struct_size(string structName, out nuint size);

    [LibraryImport(LibraryName, StringMarshalling = StringMarshalling.Utf8)]
    public static partial FluxStatus fx_abi_field_offset(string structName, string fieldName, out nuint offset);

    [LibraryImport(LibraryName)]
    public static partial FluxStatus fx_debug_throw(int kind);
}
