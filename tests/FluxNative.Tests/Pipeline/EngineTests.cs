using FluxNative.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>
/// Engine files from .NET (<see cref="FluxEngine"/>): built from the demo models, an engine is a model folder to every
/// loader: the same images as its sources (bf16: bit for bit), its tokenizers carried inside, and a quality check that
/// measures what FP8 costs.
/// </summary>
public sealed class EngineTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    private FluxPipelineSources Demo() => DemoModels.Write(temp.File("demo"));

    private static GenerationRequest Request(string prompt) =>
        new() { Prompt = prompt, Width = 128, Height = 96, Steps = 3, Seed = 7, WriteMetadata = false };

    [Fact]
    public async Task A_bf16_engine_generates_the_images_of_its_sources_in_bf16_with_its_own_tokenizers()
    {
        FluxPipelineSources sources = Demo();
        string engine = temp.File("demo-bf16.fluxengine");
        FluxEngineInfo info = FluxEngine.Build(sources, engine, new FluxEngineBuildOptions { Precision = FluxEnginePrecision.Bf16 });

        Assert.Equal(FluxEngineInfo.SupportedFormatVersion, info.FormatVersion);
        Assert.StartsWith("cpu-panels32.", info.TargetLayout);
        Assert.Equal(["autoencoder", "clip", "t5", "transformer"], info.Components.Select(c => c.Name).Order());
        Assert.Contains(info.Files, f => f.Name == "tokenizer/vocab.json");
        Assert.Contains(info.Files, f => f.Name == "tokenizer_2/tokenizer.json");
        Assert.Equal(info.Components.Single(c => c.Kind == ModelKind.FluxTransformer).LayerDTypes.Keys, ["BF16"]);
        // Every source is recorded with its files' SHA-256.
        var recorded = info.Build.GetProperty("sources").EnumerateArray().ToList();
        Assert.Equal(4, recorded.Count);
        Assert.All(recorded, s => Assert.All(s.GetProperty("files").EnumerateArray(), f => Assert.Equal(64, f.GetProperty("sha256").GetString()!.Length)));

        GenerationResult want, got;
        using (FluxPipeline source = FluxPipeline.Load(sources, DemoModels.Options with { TransformerWeights = FluxWeightFormat.Bf16 }))
        {
            want = await source.GenerateAsync(Request("a lighthouse at night"));
        }

        // The engine alone, as a model folder: its components and its tokenizers.
        using (FluxPipeline fromEngine = FluxPipeline.Load(new FluxPipelineSources { ModelDirectory = engine }, DemoModels.Options))
        {
            got = await fromEngine.GenerateAsync(Request("a lighthouse at night"));
        }

        Assert.Equal(want.Images[0].Rgb.ToArray(), got.Images[0].Rgb.ToArray());

        // A part given on its own replaces the engine's; the other encoder and its tokenizer still come from the engine.
        PromptEncoderSources text = new FluxPipelineSources { ModelDirectory = engine, T5 = sources.T5, T5Tokenizer = sources.T5Tokenizer }.ResolvePromptEncoder()!;
        Assert.Equal((engine, sources.T5, sources.T5Tokenizer), (text.Clip, text.T5, text.T5Tokenizer));
        Assert.True(File.Exists(Path.Combine(text.ClipTokenizer, "vocab.json")), text.ClipTokenizer);
    }

    [Fact]
    public void The_quality_check_measures_an_fp8_engine_and_finds_a_bf16_one_identical()
    {
        FluxPipelineSources sources = Demo();
        var check = new EngineQualityOptions { Prompts = ["a red fox", "a blue car"], Size = 64, Steps = 2 };

        string bf16 = temp.File("bf16.fluxengine");
        FluxEngine.Build(sources, bf16, new FluxEngineBuildOptions { HashSources = false });
        EngineQualityResult same = EngineQualityCheck.Run(sources, bf16, check);
        Assert.Equal(0, same.RelativeL2);
        Assert.True(double.IsPositiveInfinity(same.WorstPsnrDb));
        Assert.True(same.Passed);

        string fp8 = temp.File("fp8.fluxengine");
        FluxEngineInfo info = FluxEngine.Build(sources, fp8, new FluxEngineBuildOptions { Precision = FluxEnginePrecision.Fp8, HashSources = false });
        Assert.Equal(FluxEnginePrecision.Fp8, info.Precision);
        IReadOnlyDictionary<string, int> layers = info.Component(ModelKind.FluxTransformer)!.LayerDTypes;
        Assert.True(layers["F8_E4M3"] > layers["BF16"], string.Join(", ", layers));
        EngineQualityResult q = EngineQualityCheck.Run(sources, fp8, check);
        Assert.Equal(2, q.Prompts);
        Assert.InRange(q.RelativeL2, 1e-4, 6e-2);
        Assert.InRange(q.WorstRelativeL2, q.RelativeL2 * 0.5, 6e-2);
        Assert.True(double.IsFinite(q.PsnrDb) && q.PsnrDb > 25, $"PSNR {q.PsnrDb}");
        Assert.True(q.Passed);
        Assert.False(EngineQualityCheck.Run(sources, fp8, check with { MaxRelativeL2 = q.RelativeL2 / 2 }).Passed);
    }

    [Fact]
    public void The_build_record_is_replaced_in_place_and_misuse_is_refused_by_name()
    {
        FluxPipelineSources sources = Demo();
        string engine = temp.File("amend.fluxengine");
        FluxEngine.Build(sources with { Clip = null, T5 = null, ClipTokenizer = null, T5Tokenizer = null }, engine, new FluxEngineBuildOptions { HashSources = false });
        FluxEngine.SetBuildRecord(engine, new System.Text.Json.Nodes.JsonObject { ["quality"] = "checked by hand" });
        FluxEngineInfo info = FluxEngine.TryRead(engine)!;
        Assert.Equal("checked by hand", info.Build.GetProperty("quality").GetString());
        Assert.Null(info.Component(ModelKind.T5Encoder));
        Assert.Empty(info.Files);

        // Published weights are not an engine; an engine without text encoders gives no prompt encoder.
        Assert.Null(FluxEngine.TryRead(sources.Transformer!));
        Assert.Null(new FluxPipelineSources { ModelDirectory = engine }.ResolvePromptEncoder());
        // Weights fixed at build: another format at load is an error naming why.
        var e = Assert.Throws<FluxNativeException>(() => FluxPipeline.Load(new FluxPipelineSources { ModelDirectory = engine },
            DemoModels.Options with { TransformerWeights = FluxWeightFormat.Fp8 }));
        Assert.Contains("as stored", e.Message);
        var notEngine = Assert.Throws<GenerationRequestException>(() => new FluxPipelineSources { ModelDirectory = sources.Transformer }.ResolveTransformer());
        Assert.Contains("not an engine", notEngine.Message);
    }
}
