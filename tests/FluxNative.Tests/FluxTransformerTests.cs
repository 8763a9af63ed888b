using System.Text.RegularExpressions;
using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>
/// <see cref="FluxTransformer"/> against the float64 NumPy reference's golden outputs, its configuration,
/// the checks it makes before any native call, and its lifetime rules.
/// </summary>
public sealed partial class FluxTransformerTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    // Tolerances as in native/tests/test_flux_transformer.cpp: f32 (and exact bf16) weights 5e-5 relative
    // L2; rounding f32 weights to bf16 at load costs about 1e-2.
    [Theory]
    [InlineData("dev-f32-bfl", FluxWeightFormat.AsStored, 5e-5)]
    [InlineData("schnell-f32-diffusers", FluxWeightFormat.AsStored, 5e-5)]
    [InlineData("dev-bf16-bfl", FluxWeightFormat.AsStored, 5e-5)]
    [InlineData("dev-f32-bfl", FluxWeightFormat.Bf16, 1e-2)]
    public void Forward_matches_the_reference(string caseName, FluxWeightFormat format, double tolerance)
    {
        FluxGoldenCase golden = FluxGoldenCase.Load(caseName);
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path), format);

        float[] output = model.Forward(golden.ReadInputs());

        double error = FluxGoldenCase.RelativeL2(output, golden.ReadExpectedOutput());
        Assert.True(error <= tolerance, $"{caseName} ({format}): relative L2 {error:G3} > {tolerance:G3}");
        if (format == FluxWeightFormat.Bf16)
        {
            // The format reached the library: f32 weights used as stored land near 1e-6.
            Assert.True(error > 1e-4, $"{caseName} with bf16 weights is as exact as f32 ({error:G3}): was the format ignored?");
        }
    }

    // BF16 activations meet the bf16 weights in the CPU's bf16 dot products: about 1e-2 relative L2, as
    // native/tests/test_flux_transformer.cpp allows.
    [Fact]
    public void Forward_with_bf16_activations_stays_near_the_reference()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-bf16-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path), activations: FluxActivationPrecision.Bf16);
        Assert.Equal(FluxActivationPrecision.Bf16, model.Activations);
        Assert.Equal(FluxWeightFormat.AsStored, model.WeightFormat);

        float[] output = model.Forward(golden.ReadInputs());

        double error = FluxGoldenCase.RelativeL2(output, golden.ReadExpectedOutput());
        Assert.True(error <= 1e-2, $"dev-bf16-bfl with bf16 activations: relative L2 {error:G3} > 1e-2");
        // Only CPUs with AVX512-BF16 take the bf16 path; elsewhere the forward stays exact.
        if (FluxNativeLibrary.Diagnose().CpuFeatures.HasFlag(CpuFeatures.Avx512Bf16))
        {
            Assert.True(error > 1e-6, $"dev-bf16-bfl with bf16 activations is as exact as f32 ({error:G3}) on a CPU with AVX512-BF16: were the activations ignored?");
        }
    }

    [Fact]
    public void Config_is_what_the_checkpoint_implies()
    {
        using FluxTransformer dev = FluxTransformer.Load(FluxGoldenCase.Load("dev-f32-bfl").WriteModel(temp.Path));
        using FluxTransformer schnell = FluxTransformer.Load(FluxGoldenCase.Load("schnell-f32-diffusers").WriteModel(temp.Path));

        FluxTransformerConfig config = dev.Config;
        Assert.Equal(64, config.InChannels);
        Assert.Equal(64, config.OutChannels);
        Assert.Equal(64, config.HiddenSize);
        Assert.Equal(2, config.NumHeads);
        Assert.Equal(32, config.HeadDim);
        Assert.Equal(256, config.MlpHidden);
        Assert.Equal(32, config.ContextInDim);
        Assert.Equal(32, config.VecInDim);
        Assert.Equal(2, config.Depth);
        Assert.Equal(3, config.DepthSingle);
        Assert.True(config.GuidanceEmbed);
        Assert.Equal(new[] { 4, 14, 14 }, config.AxesDim);
        Assert.Equal(10000.0, config.Theta);
        Assert.Equal(config.HeadDim, config.AxesDim.Sum());
        Assert.Equal(FluxWeightFormat.AsStored, dev.WeightFormat);
        Assert.Equal(FluxActivationPrecision.F32, dev.Activations);

        Assert.False(schnell.Config.GuidanceEmbed);
        Assert.Equal(config with { GuidanceEmbed = false, AxesDim = schnell.Config.AxesDim }, schnell.Config);
        Assert.Contains("\"in_channels\"", dev.ConfigJson());
    }

    [Fact]
    public void Forward_runs_after_the_checkpoint_is_disposed()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        FluxTransformer model;
        using (Checkpoint checkpoint = Checkpoint.Open(golden.WriteModel(temp.Path)))
        {
            model = FluxTransformer.Load(checkpoint);
        }

        GC.Collect();
        GC.WaitForPendingFinalizers();
        using (model)
        {
            float[] output = model.Forward(golden.ReadInputs());
            Assert.True(FluxGoldenCase.RelativeL2(output, golden.ReadExpectedOutput()) <= 5e-5);
        }
    }

    [Fact]
    public void Forward_into_a_span_equals_the_array_forward_and_is_repeatable()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("schnell-f32-diffusers");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path), threads: 2);
        FluxForwardInputs inputs = golden.ReadInputs();

        float[] first = model.Forward(inputs);
        float[] second = new float[inputs.OutputLength(model.Config)];
        model.Forward(inputs, second);

        Assert.Equal(first, second);
    }

    [Fact]
    public void Inputs_may_be_slices_of_larger_buffers()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path));
        FluxForwardInputs inputs = golden.ReadInputs();

        // Pinning must pass the slice's own start, not its array's.
        float[] padded = [.. new float[7], .. inputs.Txt.ToArray(), .. new float[5]];
        float[] output = model.Forward(inputs with { Txt = padded.AsMemory(7, inputs.Txt.Length) });

        Assert.Equal(model.Forward(inputs), output);
    }

    public static TheoryData<string, string> WrongLengths() => new()
    {
        { "img", "img has 2047 values but [B=2, Limg=16, in_channels=64] needs 2048." },
        { "img_ids", "img_ids has 95 values but [B=2, Limg=16, 3] needs 96." },
        { "txt", "txt has 511 values but [B=2, Ltxt=8, context_in_dim=32] needs 512." },
        { "txt_ids", "txt_ids has 47 values but [B=2, Ltxt=8, 3] needs 48." },
        { "y", "y has 63 values but [B=2, vec_in_dim=32] needs 64." },
        { "timesteps", "timesteps has 1 values but [B=2] needs 2." },
        { "guidance", "guidance has 1 values but [B=2] needs 2." },
    };

    [Theory]
    [MemberData(nameof(WrongLengths))]
    public void A_tensor_of_the_wrong_length_is_refused_by_name_and_shape(string tensor, string message)
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path));
        FluxForwardInputs inputs = golden.ReadInputs();
        FluxForwardInputs wrong = tensor switch
        {
            "img" => inputs with { Img = inputs.Img[1..] },
            "img_ids" => inputs with { ImgIds = inputs.ImgIds[1..] },
            "txt" => inputs with { Txt = inputs.Txt[1..] },
            "txt_ids" => inputs with { TxtIds = inputs.TxtIds[1..] },
            "y" => inputs with { Y = inputs.Y[1..] },
            "timesteps" => inputs with { Timesteps = inputs.Timesteps[1..] },
            "guidance" => inputs with { Guidance = inputs.Guidance[1..] },
            _ => throw new ArgumentOutOfRangeException(nameof(tensor)),
        };

        ArgumentException array = Assert.Throws<ArgumentException>(() => model.Forward(wrong));
        ArgumentException span = Assert.Throws<ArgumentException>(() => model.Forward(wrong, new float[2 * 16 * 64]));

        Assert.StartsWith(message, array.Message);
        Assert.StartsWith(message, span.Message);
    }

    [Fact]
    public void Token_counts_that_disagree_with_the_tensors_are_refused()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path));
        FluxForwardInputs inputs = golden.ReadInputs();

        var e = Assert.Throws<ArgumentException>(() => model.Forward(inputs with { TextTokens = 4 }));
        Assert.StartsWith("txt has 512 values but [B=2, Ltxt=4, context_in_dim=32] needs 256.", e.Message);

        e = Assert.Throws<ArgumentException>(() => model.Forward(inputs with { Batch = 0 }));
        Assert.Contains("at least 1", e.Message);
    }

    [Fact]
    public void A_dev_model_without_guidance_is_refused_and_schnell_needs_none()
    {
        using FluxTransformer dev = FluxTransformer.Load(FluxGoldenCase.Load("dev-f32-bfl").WriteModel(temp.Path));
        FluxGoldenCase schnellCase = FluxGoldenCase.Load("schnell-f32-diffusers");
        using FluxTransformer schnell = FluxTransformer.Load(schnellCase.WriteModel(temp.Path));
        FluxForwardInputs withoutGuidance = schnellCase.ReadInputs();
        Assert.True(withoutGuidance.Guidance.IsEmpty);

        var e = Assert.Throws<ArgumentException>(() => dev.Forward(withoutGuidance));
        Assert.Contains("guidance is missing", e.Message);
        Assert.Contains("[B=2]", e.Message);

        float[] without = schnell.Forward(withoutGuidance);
        // Guidance given to a model without a guidance embedder changes nothing.
        float[] with = schnell.Forward(withoutGuidance with { Guidance = new float[] { 3.5f, 4.0f } });
        Assert.Equal(without, with);
    }

    [Fact]
    public void An_output_span_of_the_wrong_length_is_refused()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path));

        var e = Assert.Throws<ArgumentException>(() => model.Forward(golden.ReadInputs(), new float[100]));

        Assert.Equal("output", e.ParamName);
        Assert.StartsWith("output has 100 values but [B=2, Limg=16, out_channels=64] needs 2048.", e.Message);
    }

    [Fact]
    public void A_checkpoint_that_is_not_a_FLUX_transformer_is_refused()
    {
        string path = temp.File("ae.safetensors");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder }, path);

        var e = Assert.Throws<FluxNativeException>(() => FluxTransformer.Load(path));

        Assert.Equal(FluxStatus.Unsupported, e.Code);
    }

    [Fact]
    public void Bad_load_arguments_are_refused_before_the_library_sees_them()
    {
        string path = FluxGoldenCase.Load("dev-f32-bfl").WriteModel(temp.Path);
        using Checkpoint checkpoint = Checkpoint.Open(path);

        Assert.Throws<ArgumentOutOfRangeException>(() => FluxTransformer.Load(checkpoint, (FluxWeightFormat)17));
        Assert.Throws<ArgumentOutOfRangeException>(() => FluxTransformer.Load(checkpoint, threads: -1));
        var activations = Assert.Throws<ArgumentOutOfRangeException>(() => FluxTransformer.Load(checkpoint, activations: (FluxActivationPrecision)2));
        Assert.Equal("activations", activations.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => FluxTransformer.Load(path, activations: (FluxActivationPrecision)(-1)));
        checkpoint.Dispose();
        Assert.Throws<ObjectDisposedException>(() => FluxTransformer.Load(checkpoint));
    }

    [Fact]
    public void A_disposed_model_refuses_forward_and_may_be_disposed_again()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path));
        FluxForwardInputs inputs = golden.ReadInputs();

        model.Dispose();
        model.Dispose();

        Assert.Throws<ObjectDisposedException>(() => model.Forward(inputs));
        Assert.Throws<ObjectDisposedException>(() => model.Forward(inputs, new float[2 * 16 * 64]));
        Assert.Throws<ObjectDisposedException>(() => model.ConfigJson());
        Assert.Equal(64, model.Config.HiddenSize);
    }

    [Fact]
    public void Weight_format_values_match_the_header()
    {
        string header = File.ReadAllText(RepoPaths.Header);
        var values = WeightFormatDefinition().Matches(header).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value));

        Assert.Equal(Enum.GetValues<FluxWeightFormat>().Length, values.Count);
        Assert.Equal((int)FluxWeightFormat.AsStored, values["FX_WEIGHTS_AS_STORED"]);
        Assert.Equal((int)FluxWeightFormat.F32, values["FX_WEIGHTS_F32"]);
        Assert.Equal((int)FluxWeightFormat.Bf16, values["FX_WEIGHTS_BF16"]);
        Assert.Equal((int)FluxWeightFormat.Fp8, values["FX_WEIGHTS_FP8"]);
    }

    [Fact]
    public void Activation_precision_values_match_the_header()
    {
        string header = File.ReadAllText(RepoPaths.Header);
        var values = ActivationPrecisionDefinition().Matches(header).ToDictionary(m => m.Groups[1].Value, m => int.Parse(m.Groups[2].Value));

        Assert.Equal(Enum.GetValues<FluxActivationPrecision>().Length, values.Count);
        Assert.Equal((int)FluxActivationPrecision.F32, values["FX_ACTIVATIONS_F32"]);
        Assert.Equal((int)FluxActivationPrecision.Bf16, values["FX_ACTIVATIONS_BF16"]);
    }

    [GeneratedRegex(@"\b(FX_WEIGHTS_\w+)\s*=\s*(\d+)")]
    private static partial Regex WeightFormatDefinition();

    [GeneratedRegex(@"\b(FX_ACTIVATIONS_\w+)\s*=\s*(\d+)")]
    private static partial Regex ActivationPrecisionDefinition();
}
