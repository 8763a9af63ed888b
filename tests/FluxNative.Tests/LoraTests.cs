using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>
/// LoRA through the .NET API (the merge itself is checked against a hand merge in native/tests/test_lora.cpp):
/// files given to the transformer and the pipeline change the output as their strength says, and bad ones are
/// refused with the file and tensor named.
/// </summary>
public sealed class LoraTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
    private readonly string model;

    public LoraTests() => model = golden.WriteModel(temp.Path);

    public void Dispose() => temp.Dispose();

    [Fact]
    public void A_kohya_lora_changes_the_output_by_its_strength()
    {
        string lora = WriteKohya("style.safetensors", rank: 4, alpha: 2f);
        FluxForwardInputs inputs = golden.ReadInputs();
        float[] Run(params FluxLora[] loras)
        {
            using FluxTransformer transformer = FluxTransformer.Load(model, loras: loras);
            return transformer.Forward(inputs);
        }

        float[] plain = Run(), full = Run(new FluxLora(lora)), half = Run(new FluxLora(lora, 0.5f)), none = Run(new FluxLora(lora, 0f));
        Assert.Equal(plain, none);
        double fullChange = FluxGoldenCase.RelativeL2(full, plain), halfChange = FluxGoldenCase.RelativeL2(half, plain);
        Assert.True(fullChange > 1e-3, $"the LoRA changed the output by {fullChange}");
        Assert.InRange(halfChange / fullChange, 0.3, 0.7);   // about half: the output is near-linear in a small update
        Assert.Equal(full, Run(FluxLora.Parse(lora + ":1")));
    }

    [Fact]
    public async Task The_pipeline_loads_its_transformer_with_the_loras()
    {
        FluxPipelineSources sources = DemoModels.Write(temp.File("demo"));
        string kohya = WriteKohyaFor(sources.Transformer!, "demo-lora.safetensors");
        GenerationRequest request = new() { Prompt = "a heron", Width = 64, Height = 64, Steps = 2, Seed = 1, ReturnLatents = true };
        using FluxPipeline plain = FluxPipeline.Load(sources, DemoModels.Options);
        using FluxPipeline adapted = FluxPipeline.Load(sources, DemoModels.Options with { Loras = [new FluxLora(kohya)] });
        GenerationResult a = await plain.GenerateAsync(request), b = await adapted.GenerateAsync(request);
        Assert.True(FluxGoldenCase.RelativeL2(b.FinalLatents, a.FinalLatents!) > 1e-4);
    }

    [Fact]
    public void A_lora_for_another_model_is_refused_naming_the_module()
    {
        string lora = temp.File("other.safetensors");
        new SafetensorsWriter()
            .Add("lora_unet_double_blocks_42_img_attn_qkv.lora_down.weight", new float[2 * 8], 2, 8)
            .Add("lora_unet_double_blocks_42_img_attn_qkv.lora_up.weight", new float[24 * 2], 24, 2)
            .Write(lora);
        var e = Assert.Throws<FluxNativeException>(() => FluxTransformer.Load(model, loras: [new FluxLora(lora)]));
        Assert.Contains("lora_unet_double_blocks_42_img_attn_qkv", e.Message);
        Assert.Contains("other.safetensors", e.Message);
    }

    [Theory]
    [InlineData("a.safetensors", "a.safetensors", 1f)]
    [InlineData("a.safetensors:0.75", "a.safetensors", 0.75f)]
    [InlineData("/m/a.safetensors:-1", "/m/a.safetensors", -1f)]
    [InlineData("C:/m/a.safetensors", "C:/m/a.safetensors", 1f)]   // a drive letter is not a strength
    public void File_and_strength_parse(string text, string path, float strength) =>
        Assert.Equal(new FluxLora(path, strength), FluxLora.Parse(text));

    [Fact]
    public void A_strength_that_is_not_finite_is_refused() =>
        Assert.Throws<FormatException>(() => FluxLora.Parse("a.safetensors:NaN"));

    /// <summary>A kohya LoRA on the first double block's qkv and the first single block's linear1 of the golden model.</summary>
    private string WriteKohya(string name, int rank, float alpha) => WriteKohyaFor(model, name, rank, alpha);

    private string WriteKohyaFor(string modelPath, string name, int rank = 2, float alpha = 0f)
    {
        using Checkpoint checkpoint = Checkpoint.Open(modelPath);
        var writer = new SafetensorsWriter();
        var random = new Random(3);
        foreach (string module in new[] { "double_blocks.0.img_attn.qkv", "single_blocks.0.linear1" })
        {
            IReadOnlyList<long> shape = checkpoint.Find(module + ".weight")!.Shape;
            string kohya = "lora_unet_" + module.Replace('.', '_');
            writer.Add(kohya + ".lora_down.weight", Normal(random, rank * (int)shape[1], 0.3f), rank, shape[1]);
            writer.Add(kohya + ".lora_up.weight", Normal(random, (int)shape[0] * rank, 0.3f), shape[0], rank);
            if (alpha != 0)
            {
                writer.Add(kohya + ".alpha", new[] { alpha });
            }
        }

        string path = temp.File(name);
        writer.Write(path);
        return path;
    }

    private static float[] Normal(Random random, int count, float spread) =>
        Enumerable.Range(0, count).Select(_ => (float)(spread * Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()))).ToArray();
}
