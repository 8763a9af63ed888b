using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace FluxNative.Interop;

// Blittable mirrors of the structs in fluxnative.h. Field order, types and therefore offsets match
// the C declarations exactly; FluxNative.Interop.Tests checks every offset and size against what the
// library reports through fx_abi_struct_size / fx_abi_field_offset.

/// <summary><c>FX_MAX_DIMS</c> dimensions (<c>int64_t shape[FX_MAX_DIMS]</c>).</summary>
[InlineArray(NativeMethods.MaxDims)]
internal struct FxShape
{
    private long _element0;
}

/// <summary>Mirror of <c>fx_build_info</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FxBuildInfo
{
    public uint StructSize;
    public uint AbiVersion;
    public uint Backends;
    public uint CpuFeatures;
    public int CudaToolkitVersion;
    public int CudaDriverVersion;
    public int CudaDeviceCount;
    public uint CpuFeaturesMachine;
}

/// <summary>Mirror of <c>fx_cuda_device_info</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxCudaDeviceInfo
{
    public uint StructSize;
    public fixed byte Name[256];
    public int ComputeMajor;
    public int ComputeMinor;
    public int Multiprocessors;
    public ulong TotalMemoryBytes;
    public ulong FreeMemoryBytes;
    public ulong ArenaBytesHeld;
    public ulong ArenaBytesPeak;
}

/// <summary>Mirror of <c>fx_tensor_info</c>. The strings belong to the checkpoint.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxTensorInfo
{
    public uint StructSize;
    public int DType;
    public byte* Name;
    public byte* File;
    public int NDim;
    public int BlockType;  // 0, or a GGUF block-quantised tensor's ggml type id
    public FxShape Shape;
    public ulong ByteSize;
    public ulong FileOffset;
}

/// <summary>Mirror of <c>fx_tensor_view</c>: a caller-owned tensor handed to the safetensors writer.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxTensorView
{
    public byte* Name;
    public int DType;
    public int NDim;
    public FxShape Shape;
    public void* Data;
    public ulong ByteSize;
}

/// <summary>Mirror of <c>fx_tiny_model_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FxTinyModelParams
{
    public uint StructSize;
    public int Kind;
    public int Layout;
    public int DType;
    public int Guidance;
    public int Shards;
    public ulong Seed;
    public int HiddenSize;
    public int NumHeads;
    public int Depth;
    public int DepthSingle;
    public int Shapes;
}

/// <summary>Mirror of <c>fx_lora</c>: an open checkpoint (its raw handle, kept alive by the caller for the call) and a strength.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FxLora
{
    public nint Checkpoint;
    public float Strength;
}

/// <summary>Mirror of <c>fx_flux_load_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxFluxLoadParams
{
    public uint StructSize;
    public int WeightFormat;
    public int NumThreads;
    public int Activations;
    public byte* Device;
    public FxLora* Loras;
    public int LoraCount;
}

/// <summary>
/// Mirror of <c>fx_flux_inputs</c>. The pointers are caller-owned f32 arrays, read only during
/// <c>fx_flux_forward</c>; <see cref="Guidance"/> may be null for models without a guidance embedder.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxFluxInputs
{
    public uint StructSize;
    public int Batch;
    public int ImgTokens;
    public int TxtTokens;
    public float* Img;
    public float* ImgIds;
    public float* Txt;
    public float* TxtIds;
    public float* Y;
    public float* Timesteps;
    public float* Guidance;
    public int* Cancel;
    public IntPtr* StepCaches;
    public int* BlocksComputed;
}

/// <summary>Mirror of <c>fx_flux_step_cache_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct FxFluxStepCacheParams
{
    public uint StructSize;
    public float Threshold;
    public int HeadBlocks;
    public int TailBlocks;
    public int WarmupSteps;
    public int FinalSteps;
    public int MaxConsecutive;
    public int TotalSteps;
}

/// <summary>Mirror of <c>fx_ae_load_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxAeLoadParams
{
    public uint StructSize;
    public int NumThreads;
    public byte* Device;
}

/// <summary>Mirror of <c>fx_text_load_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxTextLoadParams
{
    public uint StructSize;
    public int WeightFormat;
    public int NumThreads;
    public byte* Device;
    public byte* Kind;
}

/// <summary>Mirror of <c>fx_engine_file</c>: a file carried inside an engine.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxEngineFile
{
    public byte* Name;
    public void* Data;
    public nuint Size;
}

/// <summary>Mirror of <c>fx_engine_build_params</c>.</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxEngineBuildParams
{
    public uint StructSize;
    public nint Transformer;
    public nint Autoencoder;
    public nint Clip;
    public nint T5;
    public int Precision;
    public int T5Precision;
    public byte* Device;
    public byte* BuildJson;
    public FxEngineFile* Files;
    public int FileCount;
    public int NumThreads;
}

/// <summary>
/// Mirror of <c>fx_image_encode_params</c>. <see cref="ParametersText"/> is null or caller-owned NUL-terminated
/// UTF-8, read only during <c>fx_image_encode</c>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct FxImageEncodeParams
{
    public uint StructSize;
    public int Format;
    public int Quality;
    public int Reserved;
    public byte* ParametersText;
}
