using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>Tiny models of every kind and layout: written, opened, described and read back.</summary>
public sealed class TinyModelTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public static TheoryData<ModelKind, CheckpointLayout, FluxVariant, DType, int> Models() => new()
    {
        { ModelKind.FluxTransformer, CheckpointLayout.Bfl, FluxVariant.Dev, DType.F32, 1 },
        { ModelKind.FluxTransformer, CheckpointLayout.Bfl, FluxVariant.Schnell, DType.BF16, 1 },
        { ModelKind.FluxTransformer, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.F16, 1 },
        { ModelKind.FluxTransformer, CheckpointLayout.Diffusers, FluxVariant.Schnell, DType.BF16, 3 },
        { ModelKind.Autoencoder, CheckpointLayout.Bfl, FluxVariant.Dev, DType.F32, 1 },
        { ModelKind.Autoencoder, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.BF16, 2 },
        { ModelKind.T5Encoder, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.F32, 1 },
        { ModelKind.T5Encoder, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.BF16, 2 },
        { ModelKind.ClipText, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.F16, 1 },
        { ModelKind.ClipText, CheckpointLayout.Diffusers, FluxVariant.Dev, DType.F32, 2 },
    };

    public void Dispose() => temp.Dispose();

    [Theory]
    [MemberData(nameof(Models))]
    public void A_tiny_model_is_described_as_what_was_asked_for(ModelKind kind, CheckpointLayout layout, FluxVariant variant, DType dtype, int shards)
    {
        var options = new TinyModelOptions { Kind = kind, Layout = layout, Variant = variant, DType = dtype, Shards = shards, Seed = 7 };
        string path = Write(options);

        using Checkpoint checkpoint = Checkpoint.Open(path);
        CheckpointDescription description = checkpoint.Describe();

        Assert.Equal(kind, description.Kind);
        // The text encoders are stored with Hugging Face transformers names inside the diffusers folder.
        Assert.Equal(kind is ModelKind.T5Encoder or ModelKind.ClipText ? CheckpointLayout.HuggingFace : layout, description.Layout);
        Assert.Equal(kind == ModelKind.FluxTransformer ? variant.ToString().ToLowerInvariant() : null, description.Variant);
        Assert.Empty(description.Problems);
        Assert.Equal(checkpoint.Tensors.Count, description.TensorCount);
        Assert.Equal(checkpoint.Tensors.Where(t => t.DType.IsFloatingPoint()).Sum(t => t.ElementCount), description.ParameterCount);
        Assert.Equal(checkpoint.Tensors.Sum(t => t.ByteSize), description.TotalBytes);
        Assert.Contains(dtype.SafetensorsName(), description.DTypes.Keys);
        Assert.Equal(shards, description.Files.Count);
        Assert.Equal(shards, checkpoint.Tensors.Select(t => t.File).Distinct().Count());
        Assert.Equal(layout == CheckpointLayout.Diffusers, description.HasConfigJson);
        Assert.Equal(
            layout == CheckpointLayout.Bfl ? CheckpointSource.File : CheckpointSource.Folder,
            description.Source);
        Assert.All(checkpoint.Tensors.Where(t => t.DType.IsFloatingPoint()), t => Assert.Equal(dtype, t.DType));
    }

    [Theory]
    [InlineData(FluxVariant.Dev, true)]
    [InlineData(FluxVariant.Schnell, false)]
    public void The_inferred_FLUX_configuration_is_the_one_written(FluxVariant variant, bool guidance)
    {
        string path = Write(new TinyModelOptions
        {
            Kind = ModelKind.FluxTransformer, Variant = variant, HiddenSize = 96, NumHeads = 3, Depth = 1, DepthSingle = 2,
        });

        using Checkpoint checkpoint = Checkpoint.Open(path);
        CheckpointDescription description = checkpoint.Describe();

        Assert.Equal(96, description.ConfigInt64("hidden_size"));
        Assert.Equal(3, description.ConfigInt64("num_heads"));
        Assert.Equal(32, description.ConfigInt64("head_dim"));
        Assert.Equal(1, description.ConfigInt64("depth"));
        Assert.Equal(2, description.ConfigInt64("depth_single"));
        Assert.Equal(guidance, description.ConfigBoolean("guidance_embed"));
        Assert.Equal(guidance, checkpoint.Find("guidance_in.in_layer.weight") is not null);
    }

    [Fact]
    public void The_default_tiny_FLUX_configuration_is_documented_one()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions()));
        CheckpointDescription description = checkpoint.Describe();

        Assert.Equal(64, description.ConfigInt64("hidden_size"));
        Assert.Equal(2, description.ConfigInt64("num_heads"));
        Assert.Equal(2, description.ConfigInt64("depth"));
        Assert.Equal(3, description.ConfigInt64("depth_single"));
        Assert.Equal(64, description.ConfigInt64("in_channels"));
    }

    [Theory]
    [InlineData(ModelKind.T5Encoder, "d_model", "num_layers")]
    [InlineData(ModelKind.ClipText, "hidden_size", "num_layers")]
    public void The_inferred_text_encoder_configuration_is_the_one_written(ModelKind kind, string widthKey, string layersKey)
    {
        string path = Write(new TinyModelOptions { Kind = kind, Layout = CheckpointLayout.Diffusers, HiddenSize = 64, NumHeads = 2, Depth = 3 });

        using Checkpoint checkpoint = Checkpoint.Open(path);
        CheckpointDescription description = checkpoint.Describe();

        Assert.Equal(64, description.ConfigInt64(widthKey));
        Assert.Equal(3, description.ConfigInt64(layersKey));
        Assert.Equal(2, description.ConfigInt64("num_heads"));
    }

    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void Every_tensor_read_as_float32_equals_its_raw_bytes_decoded_by_hand(DType dtype)
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions { DType = dtype, Seed = 11 }));

        Assert.NotEmpty(checkpoint.Tensors);
        foreach (TensorInfo tensor in checkpoint.Tensors)
        {
            byte[] raw = checkpoint.ReadRaw(tensor.Name);
            float[] values = checkpoint.ReadFloat32(tensor.Name);

            Assert.Equal(tensor.ByteSize, raw.Length);
            Assert.Equal(tensor.ElementCount, values.Length);
            Assert.Equal(HandConversions.Decode(raw, dtype), values);
        }
    }

    [Fact]
    public void One_seed_gives_the_same_weights_in_both_layouts_and_another_seed_others()
    {
        using Checkpoint bfl = Checkpoint.Open(Write(new TinyModelOptions { Seed = 3 }));
        using Checkpoint diffusers = Checkpoint.Open(Write(new TinyModelOptions { Seed = 3, Layout = CheckpointLayout.Diffusers }));
        using Checkpoint reseeded = Checkpoint.Open(Write(new TinyModelOptions { Seed = 4 }));

        // img_in is called x_embedder in diffusers.
        Assert.Equal(bfl.ReadFloat32("img_in.weight"), diffusers.ReadFloat32("x_embedder.weight"));
        Assert.NotEqual(bfl.ReadFloat32("img_in.weight"), reseeded.ReadFloat32("img_in.weight"));
    }

    [Fact]
    public void Reading_into_a_caller_buffer_converts_to_the_asked_dtype()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions { DType = DType.F32 }));
        TensorInfo tensor = checkpoint.Tensors[0];
        var bf16 = new byte[tensor.ElementCount * 2];

        checkpoint.Read(tensor.Name, DType.BF16, bf16);

        float[] expected = checkpoint.ReadFloat32(tensor.Name);
        float[] roundTripped = HandConversions.Decode(bf16, DType.BF16);
        for (int i = 0; i < expected.Length; i++)
        {
            // bf16 keeps 8 significant bits: a relative error of at most 2^-9 after rounding.
            Assert.InRange(Math.Abs(roundTripped[i] - expected[i]), 0, Math.Abs(expected[i]) / 256);
        }
    }

    [Fact]
    public void A_destination_too_small_is_an_argument_error()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions()));
        TensorInfo tensor = checkpoint.Tensors[0];

        var exception = Assert.Throws<ArgumentException>(() => checkpoint.ReadFloat32(tensor.Name, new float[tensor.ElementCount - 1]));

        Assert.Contains(tensor.Name, exception.Message);
    }

    [Fact]
    public void Find_returns_null_and_reads_throw_NotFound_for_an_unknown_tensor()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions()));

        Assert.Null(checkpoint.Find("no.such.tensor"));
        var exception = Assert.Throws<FluxNativeException>(() => checkpoint.ReadFloat32("no.such.tensor"));
        Assert.Equal(FluxStatus.NotFound, exception.Code);
        Assert.Contains("no.such.tensor", exception.Message);
    }

    [Fact]
    public void Find_returns_the_tensor_listed_under_that_name()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions()));

        foreach (TensorInfo tensor in checkpoint.Tensors)
        {
            Assert.Equal(tensor, checkpoint.Find(tensor.Name));
        }

        Assert.Equal(checkpoint.Tensors.Select(t => t.Name).Order(StringComparer.Ordinal), checkpoint.Tensors.Select(t => t.Name));
    }

    [Fact]
    public void Tensors_can_be_read_from_many_threads_at_once()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions { DType = DType.BF16 }));
        var expected = checkpoint.Tensors.ToDictionary(t => t.Name, t => checkpoint.ReadFloat32(t.Name));

        Parallel.For(0, 64, new ParallelOptions { MaxDegreeOfParallelism = 8 }, i =>
        {
            TensorInfo tensor = checkpoint.Tensors[i % checkpoint.Tensors.Count];
            Assert.Equal(expected[tensor.Name], checkpoint.ReadFloat32(tensor.Name));
        });
    }

    [Fact]
    public void An_impossible_tiny_model_is_an_invalid_argument()
    {
        // The BFL layout is one file; shards need a diffusers folder.
        var exception = Assert.Throws<FluxNativeException>(() =>
            TinyModel.Write(new TinyModelOptions { Layout = CheckpointLayout.Bfl, Shards = 2 }, temp.File("bad.safetensors")));

        Assert.Equal(FluxStatus.InvalidArgument, exception.Code);
        Assert.Contains("shards", exception.Message);
    }

    [Fact]
    public void Describe_json_is_the_document_Describe_parses()
    {
        using Checkpoint checkpoint = Checkpoint.Open(Write(new TinyModelOptions()));

        string json = checkpoint.DescribeJson();

        Assert.StartsWith("{", json.TrimStart());
        Assert.Equal(checkpoint.Describe().ParameterCount, CheckpointDescription.Parse(json).ParameterCount);
    }

    [Fact]
    public void Published_shapes_are_FLUX_1s_widths_with_the_depth_asked_for()
    {
        // The small components at their published widths (the transformer and T5 are covered by flux bench --synthetic's test).
        using (Checkpoint clip = Checkpoint.Open(Write(new TinyModelOptions
        {
            Kind = ModelKind.ClipText, Layout = CheckpointLayout.Diffusers, DType = DType.BF16, PublishedShapes = true, Depth = 1,
        })))
        {
            CheckpointDescription d = clip.Describe();
            Assert.Empty(d.Problems);
            Assert.Equal((768L, 3072L, 12L, 1L), (d.ConfigInt64("hidden_size"), d.ConfigInt64("intermediate_size"), d.ConfigInt64("num_heads"), d.ConfigInt64("num_layers")));
        }

        using (Checkpoint ae = Checkpoint.Open(Write(new TinyModelOptions { Kind = ModelKind.Autoencoder, DType = DType.BF16, PublishedShapes = true })))
        {
            CheckpointDescription d = ae.Describe();
            Assert.Empty(d.Problems);
            Assert.Equal((128L, 2L), (d.ConfigInt64("ch"), d.ConfigInt64("num_res_blocks")));
            Assert.Equal([1, 2, 4, 4], d.Config.GetProperty("ch_mult").EnumerateArray().Select(e => e.GetInt32()));
            // The published autoencoder's parameter count (docs/flux-model.md §3), to the parameter.
            Assert.Equal(83_819_683, d.ParameterCount);
        }
    }

    [Fact]
    public void Published_shapes_refuse_a_width_of_their_own()
    {
        var e = Assert.Throws<FluxNativeException>(() => Write(new TinyModelOptions { PublishedShapes = true, HiddenSize = 128, Depth = 1, DepthSingle = 1 }));
        Assert.Equal(FluxStatus.InvalidArgument, e.Code);
        Assert.Contains("published shapes fix the width", e.Message);
    }

    private string Write(TinyModelOptions options)
    {
        string path = options.Layout == CheckpointLayout.Bfl
            ? temp.File($"model-{Guid.NewGuid():N}.safetensors")
            : temp.File($"model-{Guid.NewGuid():N}");
        TinyModel.Write(options, path);
        return path;
    }
}
