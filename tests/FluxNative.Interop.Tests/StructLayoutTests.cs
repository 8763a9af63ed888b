using System.Reflection;
using System.Runtime.CompilerServices;

namespace FluxNative.Interop.Tests;

/// <summary>
/// Every mirrored struct has the size and field offsets the native library was compiled with
/// (as it reports them through fx_abi_struct_size / fx_abi_field_offset), field by field.
/// </summary>
public class StructLayoutTests
{
    // (C struct, C field, C# field, the C# field's offset in the managed layout). Offsets are taken
    // from field addresses, i.e. the layout the JIT really uses (no marshalling layout is involved:
    // runtime marshalling is disabled for the binding).
    public static unsafe TheoryData<string, string, string, long> Fields()
    {
        var data = new TheoryData<string, string, string, long>();

        FxBuildInfo b;
        var build = (byte*)&b;
        data.Add("fx_build_info", "struct_size", nameof(b.StructSize), (byte*)&b.StructSize - build);
        data.Add("fx_build_info", "abi_version", nameof(b.AbiVersion), (byte*)&b.AbiVersion - build);
        data.Add("fx_build_info", "backends", nameof(b.Backends), (byte*)&b.Backends - build);
        data.Add("fx_build_info", "cpu_features", nameof(b.CpuFeatures), (byte*)&b.CpuFeatures - build);
        data.Add("fx_build_info", "cuda_toolkit_version", nameof(b.CudaToolkitVersion), (byte*)&b.CudaToolkitVersion - build);
        data.Add("fx_build_info", "cuda_driver_version", nameof(b.CudaDriverVersion), (byte*)&b.CudaDriverVersion - build);
        data.Add("fx_build_info", "cuda_device_count", nameof(b.CudaDeviceCount), (byte*)&b.CudaDeviceCount - build);
        data.Add("fx_build_info", "cpu_features_machine", nameof(b.CpuFeaturesMachine), (byte*)&b.CpuFeaturesMachine - build);

        FxCudaDeviceInfo g;
        var gpu = (byte*)&g;
        data.Add("fx_cuda_device_info", "struct_size", nameof(g.StructSize), (byte*)&g.StructSize - gpu);
        data.Add("fx_cuda_device_info", "name", nameof(g.Name), g.Name - gpu);
        data.Add("fx_cuda_device_info", "compute_major", nameof(g.ComputeMajor), (byte*)&g.ComputeMajor - gpu);
        data.Add("fx_cuda_device_info", "compute_minor", nameof(g.ComputeMinor), (byte*)&g.ComputeMinor - gpu);
        data.Add("fx_cuda_device_info", "multiprocessors", nameof(g.Multiprocessors), (byte*)&g.Multiprocessors - gpu);
        data.Add("fx_cuda_device_info", "total_memory_bytes", nameof(g.TotalMemoryBytes), (byte*)&g.TotalMemoryBytes - gpu);
        data.Add("fx_cuda_device_info", "free_memory_bytes", nameof(g.FreeMemoryBytes), (byte*)&g.FreeMemoryBytes - gpu);
        data.Add("fx_cuda_device_info", "arena_bytes_held", nameof(g.ArenaBytesHeld), (byte*)&g.ArenaBytesHeld - gpu);
        data.Add("fx_cuda_device_info", "arena_bytes_peak", nameof(g.ArenaBytesPeak), (byte*)&g.ArenaBytesPeak - gpu);

        FxTensorInfo i;
        var info = (byte*)&i;
        data.Add("fx_tensor_info", "struct_size", nameof(i.StructSize), (byte*)&i.StructSize - info);
        data.Add("fx_tensor_info", "dtype", nameof(i.DType), (byte*)&i.DType - info);
        data.Add("fx_tensor_info", "name", nameof(i.Name), (byte*)&i.Name - info);
        data.Add("fx_tensor_info", "file", nameof(i.File), (byte*)&i.File - info);
        data.Add("fx_tensor_info", "ndim", nameof(i.NDim), (byte*)&i.NDim - info);
        data.Add("fx_tensor_info", "block_type", nameof(i.BlockType), (byte*)&i.BlockType - info);
        data.Add("fx_tensor_info", "shape", nameof(i.Shape), (byte*)&i.Shape - info);
        data.Add("fx_tensor_info", "byte_size", nameof(i.ByteSize), (byte*)&i.ByteSize - info);
        data.Add("fx_tensor_info", "file_offset", nameof(i.FileOffset), (byte*)&i.FileOffset - info);

        FxTensorView v;
        var view = (byte*)&v;
        data.Add("fx_tensor_view", "name", nameof(v.Name), (byte*)&v.Name - view);
        data.Add("fx_tensor_view", "dtype", nameof(v.DType), (byte*)&v.DType - view);
        data.Add("fx_tensor_view", "ndim", nameof(v.NDim), (byte*)&v.NDim - view);
        data.Add("fx_tensor_view", "shape", nameof(v.Shape), (byte*)&v.Shape - view);
        data.Add("fx_tensor_view", "data", nameof(v.Data), (byte*)&v.Data - view);
        data.Add("fx_tensor_view", "byte_size", nameof(v.ByteSize), (byte*)&v.ByteSize - view);

        FxTinyModelParams t;
        var tiny = (byte*)&t;
        data.Add("fx_tiny_model_params", "struct_size", nameof(t.StructSize), (byte*)&t.StructSize - tiny);
        data.Add("fx_tiny_model_params", "kind", nameof(t.Kind), (byte*)&t.Kind - tiny);
        data.Add("fx_tiny_model_params", "layout", nameof(t.Layout), (byte*)&t.Layout - tiny);
        data.Add("fx_tiny_model_params", "dtype", nameof(t.DType), (byte*)&t.DType - tiny);
        data.Add("fx_tiny_model_params", "guidance", nameof(t.Guidance), (byte*)&t.Guidance - tiny);
        data.Add("fx_tiny_model_params", "shards", nameof(t.Shards), (byte*)&t.Shards - tiny);
        data.Add("fx_tiny_model_params", "seed", nameof(t.Seed), (byte*)&t.Seed - tiny);
        data.Add("fx_tiny_model_params", "hidden_size", nameof(t.HiddenSize), (byte*)&t.HiddenSize - tiny);
        data.Add("fx_tiny_model_params", "num_heads", nameof(t.NumHeads), (byte*)&t.NumHeads - tiny);
        data.Add("fx_tiny_model_params", "depth", nameof(t.Depth), (byte*)&t.Depth - tiny);
        data.Add("fx_tiny_model_params", "depth_single", nameof(t.DepthSingle), (byte*)&t.DepthSingle - tiny);
        data.Add("fx_tiny_model_params", "shapes", nameof(t.Shapes), (byte*)&t.Shapes - tiny);

        FxFluxLoadParams l;
        var load = (byte*)&l;
        data.Add("fx_flux_load_params", "struct_size", nameof(l.StructSize), (byte*)&l.StructSize - load);
        data.Add("fx_flux_load_params", "weight_format", nameof(l.WeightFormat), (byte*)&l.WeightFormat - load);
        data.Add("fx_flux_load_params", "num_threads", nameof(l.NumThreads), (byte*)&l.NumThreads - load);
        data.Add("fx_flux_load_params", "activations", nameof(l.Activations), (byte*)&l.Activations - load);
        data.Add("fx_flux_load_params", "device", nameof(l.Device), (byte*)&l.Device - load);
        data.Add("fx_flux_load_params", "loras", nameof(l.Loras), (byte*)&l.Loras - load);
        data.Add("fx_flux_load_params", "lora_count", nameof(l.LoraCount), (byte*)&l.LoraCount - load);

        FxLora r;
        var lora = (byte*)&r;
        data.Add("fx_lora", "checkpoint", nameof(r.Checkpoint), (byte*)&r.Checkpoint - lora);
        data.Add("fx_lora", "strength", nameof(r.Strength), (byte*)&r.Strength - lora);

        FxFluxInputs f;
        var inputs = (byte*)&f;
        data.Add("fx_flux_inputs", "struct_size", nameof(f.StructSize), (byte*)&f.StructSize - inputs);
        data.Add("fx_flux_inputs", "batch", nameof(f.Batch), (byte*)&f.Batch - inputs);
        data.Add("fx_flux_inputs", "img_tokens", nameof(f.ImgTokens), (byte*)&f.ImgTokens - inputs);
        data.Add("fx_flux_inputs", "txt_tokens", nameof(f.TxtTokens), (byte*)&f.TxtTokens - inputs);
        data.Add("fx_flux_inputs", "img", nameof(f.Img), (byte*)&f.Img - inputs);
        data.Add("fx_flux_inputs", "img_ids", nameof(f.ImgIds), (byte*)&f.ImgIds - inputs);
        data.Add("fx_flux_inputs", "txt", nameof(f.Txt), (byte*)&f.Txt - inputs);
        data.Add("fx_flux_inputs", "txt_ids", nameof(f.TxtIds), (byte*)&f.TxtIds - inputs);
        data.Add("fx_flux_inputs", "y", nameof(f.Y), (byte*)&f.Y - inputs);
        data.Add("fx_flux_inputs", "timesteps", nameof(f.Timesteps), (byte*)&f.Timesteps - inputs);
        data.Add("fx_flux_inputs", "guidance", nameof(f.Guidance), (byte*)&f.Guidance - inputs);
        data.Add("fx_flux_inputs", "cancel", nameof(f.Cancel), (byte*)&f.Cancel - inputs);
        data.Add("fx_flux_inputs", "step_caches", nameof(f.StepCaches), (byte*)&f.StepCaches - inputs);
        data.Add("fx_flux_inputs", "blocks_computed", nameof(f.BlocksComputed), (byte*)&f.BlocksComputed - inputs);

        FxFluxStepCacheParams c;
        var cache = (byte*)&c;
        data.Add("fx_flux_step_cache_params", "struct_size", nameof(c.StructSize), (byte*)&c.StructSize - cache);
        data.Add("fx_flux_step_cache_params", "threshold", nameof(c.Threshold), (byte*)&c.Threshold - cache);
        data.Add("fx_flux_step_cache_params", "head_blocks", nameof(c.HeadBlocks), (byte*)&c.HeadBlocks - cache);
        data.Add("fx_flux_step_cache_params", "tail_blocks", nameof(c.TailBlocks), (byte*)&c.TailBlocks - cache);
        data.Add("fx_flux_step_cache_params", "warmup_steps", nameof(c.WarmupSteps), (byte*)&c.WarmupSteps - cache);
        data.Add("fx_flux_step_cache_params", "final_steps", nameof(c.FinalSteps), (byte*)&c.FinalSteps - cache);
        data.Add("fx_flux_step_cache_params", "max_consecutive", nameof(c.MaxConsecutive), (byte*)&c.MaxConsecutive - cache);
        data.Add("fx_flux_step_cache_params", "total_steps", nameof(c.TotalSteps), (byte*)&c.TotalSteps - cache);

        FxAeLoadParams a;
        var ae = (byte*)&a;
        data.Add("fx_ae_load_params", "struct_size", nameof(a.StructSize), (byte*)&a.StructSize - ae);
        data.Add("fx_ae_load_params", "num_threads", nameof(a.NumThreads), (byte*)&a.NumThreads - ae);
        data.Add("fx_ae_load_params", "device", nameof(a.Device), (byte*)&a.Device - ae);

        FxTextLoadParams x;
        var text = (byte*)&x;
        data.Add("fx_text_load_params", "struct_size", nameof(x.StructSize), (byte*)&x.StructSize - text);
        data.Add("fx_text_load_params", "weight_format", nameof(x.WeightFormat), (byte*)&x.WeightFormat - text);
        data.Add("fx_text_load_params", "num_threads", nameof(x.NumThreads), (byte*)&x.NumThreads - text);
        data.Add("fx_text_load_params", "device", nameof(x.Device), (byte*)&x.Device - text);
        data.Add("fx_text_load_params", "kind", nameof(x.Kind), (byte*)&x.Kind - text);

        FxEngineFile ef;
        var file = (byte*)&ef;
        data.Add("fx_engine_file", "name", nameof(ef.Name), (byte*)&ef.Name - file);
        data.Add("fx_engine_file", "data", nameof(ef.Data), (byte*)&ef.Data - file);
        data.Add("fx_engine_file", "size", nameof(ef.Size), (byte*)&ef.Size - file);

        FxEngineBuildParams eb;
        var engineBuild = (byte*)&eb;
        data.Add("fx_engine_build_params", "struct_size", nameof(eb.StructSize), (byte*)&eb.StructSize - engineBuild);
        data.Add("fx_engine_build_params", "transformer", nameof(eb.Transformer), (byte*)&eb.Transformer - engineBuild);
        data.Add("fx_engine_build_params", "autoencoder", nameof(eb.Autoencoder), (byte*)&eb.Autoencoder - engineBuild);
        data.Add("fx_engine_build_params", "clip", nameof(eb.Clip), (byte*)&eb.Clip - engineBuild);
        data.Add("fx_engine_build_params", "t5", nameof(eb.T5), (byte*)&eb.T5 - engineBuild);
        data.Add("fx_engine_build_params", "precision", nameof(eb.Precision), (byte*)&eb.Precision - engineBuild);
        data.Add("fx_engine_build_params", "t5_precision", nameof(eb.T5Precision), (byte*)&eb.T5Precision - engineBuild);
        data.Add("fx_engine_build_params", "device", nameof(eb.Device), (byte*)&eb.Device - engineBuild);
        data.Add("fx_engine_build_params", "build_json", nameof(eb.BuildJson), (byte*)&eb.BuildJson - engineBuild);
        data.Add("fx_engine_build_params", "files", nameof(eb.Files), (byte*)&eb.Files - engineBuild);
        data.Add("fx_engine_build_params", "file_count", nameof(eb.FileCount), (byte*)&eb.FileCount - engineBuild);
        data.Add("fx_engine_build_params", "num_threads", nameof(eb.NumThreads), (byte*)&eb.NumThreads - engineBuild);

        FxImageEncodeParams e;
        var encode = (byte*)&e;
        data.Add("fx_image_encode_params", "struct_size", nameof(e.StructSize), (byte*)&e.StructSize - encode);
        data.Add("fx_image_encode_params", "format", nameof(e.Format), (byte*)&e.Format - encode);
        data.Add("fx_image_encode_params", "quality", nameof(e.Quality), (byte*)&e.Quality - encode);
        data.Add("fx_image_encode_params", "reserved", nameof(e.Reserved), (byte*)&e.Reserved - encode);
        data.Add("fx_image_encode_params", "parameters_text", nameof(e.ParametersText), (byte*)&e.ParametersText - encode);
        return data;
    }

    public static TheoryData<string, int> Sizes() => new()
    {
        { "fx_build_info", Unsafe.SizeOf<FxBuildInfo>() },
        { "fx_tensor_info", Unsafe.SizeOf<FxTensorInfo>() },
        { "fx_tensor_view", Unsafe.SizeOf<FxTensorView>() },
        { "fx_tiny_model_params", Unsafe.SizeOf<FxTinyModelParams>() },
        { "fx_flux_load_params", Unsafe.SizeOf<FxFluxLoadParams>() },
        { "fx_lora", Unsafe.SizeOf<FxLora>() },
        { "fx_flux_inputs", Unsafe.SizeOf<FxFluxInputs>() },
        { "fx_flux_step_cache_params", Unsafe.SizeOf<FxFluxStepCacheParams>() },
        { "fx_ae_load_params", Unsafe.SizeOf<FxAeLoadParams>() },
        { "fx_text_load_params", Unsafe.SizeOf<FxTextLoadParams>() },
        { "fx_engine_file", Unsafe.SizeOf<FxEngineFile>() },
        { "fx_engine_build_params", Unsafe.SizeOf<FxEngineBuildParams>() },
        { "fx_image_encode_params", Unsafe.SizeOf<FxImageEncodeParams>() },
        { "fx_cuda_device_info", Unsafe.SizeOf<FxCudaDeviceInfo>() },
    };

    [Theory]
    [MemberData(nameof(Fields))]
    public void Field_offset_matches_the_native_struct(string structName, string fieldName, string managedField, long managedOffset)
    {
        Assert.Equal(FluxStatus.Ok, NativeMethods.fx_abi_field_offset(structName, fieldName, out nuint nativeOffset));
        Assert.True((ulong)managedOffset == nativeOffset,
            $"{structName}.{fieldName} is at {nativeOffset} natively, but {managedField} is at {managedOffset}.");
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void Struct_size_matches_the_native_struct(string structName, int managedSize)
    {
        Assert.Equal(FluxStatus.Ok, NativeMethods.fx_abi_struct_size(structName, out nuint nativeSize));
        Assert.Equal(nativeSize, (nuint)managedSize);
    }

    [Fact]
    public void Every_managed_field_is_checked()
    {
        var checkedFields = Fields().Select(row => ((string)row[0], (string)row[2])).ToHashSet();
        var structs = new Dictionary<Type, string>
        {
            [typeof(FxBuildInfo)] = "fx_build_info",
            [typeof(FxTensorInfo)] = "fx_tensor_info",
            [typeof(FxTensorView)] = "fx_tensor_view",
            [typeof(FxTinyModelParams)] = "fx_tiny_model_params",
            [typeof(FxFluxLoadParams)] = "fx_flux_load_params",
            [typeof(FxLora)] = "fx_lora",
            [typeof(FxFluxInputs)] = "fx_flux_inputs",
            [typeof(FxFluxStepCacheParams)] = "fx_flux_step_cache_params",
            [typeof(FxAeLoadParams)] = "fx_ae_load_params",
            [typeof(FxTextLoadParams)] = "fx_text_load_params",
            [typeof(FxEngineFile)] = "fx_engine_file",
            [typeof(FxEngineBuildParams)] = "fx_engine_build_params",
            [typeof(FxImageEncodeParams)] = "fx_image_encode_params",
            [typeof(FxCudaDeviceInfo)] = "fx_cuda_device_info",
        };
        foreach ((Type type, string cName) in structs)
        {
            foreach (FieldInfo field in type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic))
            {
                Assert.Contains((cName, field.Name), checkedFields);
            }
        }
    }

    [Fact]
    public void An_unknown_struct_or_field_is_refused_by_name()
    {
        FluxStatus status = NativeMethods.fx_abi_struct_size("fx_no_such_struct", out _);
        Assert.NotEqual(FluxStatus.Ok, status);
        Assert.Contains("fx_no_such_struct", NativeStatus.LastErrorMessage(status));

        status = NativeMethods.fx_abi_field_offset("fx_tensor_info", "no_such_field", out _);
        Assert.NotEqual(FluxStatus.Ok, status);
        Assert.Contains("no_such_field", NativeStatus.LastErrorMessage(status));
    }

    [Fact]
    public unsafe void Init_functions_set_struct_size_to_the_native_size()
    {
        FxBuildInfo build;
        NativeMethods.fx_build_info_init(&build);
        Assert.Equal((uint)sizeof(FxBuildInfo), build.StructSize);

        FxTensorInfo info;
        NativeMethods.fx_tensor_info_init(&info);
        Assert.Equal((uint)sizeof(FxTensorInfo), info.StructSize);

        FxTinyModelParams tiny;
        NativeMethods.fx_tiny_model_params_init(&tiny);
        Assert.Equal((uint)sizeof(FxTinyModelParams), tiny.StructSize);

        FxFluxLoadParams load;
        NativeMethods.fx_flux_load_params_init(&load);
        Assert.Equal((uint)sizeof(FxFluxLoadParams), load.StructSize);

        FxFluxInputs inputs;
        NativeMethods.fx_flux_inputs_init(&inputs);
        Assert.Equal((uint)sizeof(FxFluxInputs), inputs.StructSize);

        FxFluxStepCacheParams cacheParams;
        NativeMethods.fx_flux_step_cache_params_init(&cacheParams);
        Assert.Equal((uint)sizeof(FxFluxStepCacheParams), cacheParams.StructSize);

        FxImageEncodeParams encode;
        NativeMethods.fx_image_encode_params_init(&encode);
        Assert.Equal((uint)sizeof(FxImageEncodeParams), encode.StructSize);
        Assert.True(encode.ParametersText == null, "no generation parameters unless the caller gives some");

        FxCudaDeviceInfo gpu;
        NativeMethods.fx_cuda_device_info_init(&gpu);
        Assert.Equal((uint)sizeof(FxCudaDeviceInfo), gpu.StructSize);
    }
}
