using System.Text;
using FluxNative.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>
/// The generation parameters in the pipeline's image files (<see cref="GenerationParameters"/>), read back with the
/// test's own PNG / Exif reader and split as AUTOMATIC1111 splits them.
/// </summary>
public class MetadataTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    [Fact]
    public async Task Each_png_carries_the_prompt_and_its_own_seed_before_the_image_data()
    {
        string prompt = $"a red fox in the snow, {Guid.NewGuid():N}";
        var request = new GenerationRequest { Prompt = prompt, Width = 64, Height = 48, Steps = 3, Guidance = 4.5, Seed = 42, NumImages = 2 };
        GenerationResult result = await pipelines.Dev.GenerateAsync(request);

        for (int k = 0; k < 2; k++)
        {
            byte[] file = result.Images[k].Bytes;
            (string text, Dictionary<string, string> pairs) = ImageMetadataReader.Split(ImageMetadataReader.Parameters(file)!);
            Assert.Equal(prompt, text);
            Assert.Equal((42 + k).ToString(System.Globalization.CultureInfo.InvariantCulture), pairs["Seed"]);
            Assert.Equal(result.Images[k].Seed, long.Parse(pairs["Seed"], System.Globalization.CultureInfo.InvariantCulture));
            Assert.Equal("3", pairs["Steps"]);
            Assert.Equal("Euler", pairs["Sampler"]);
            Assert.Equal("1", pairs["CFG scale"]);
            Assert.Equal("4.5", pairs["Distilled CFG Scale"]);
            Assert.Equal("4.5", pairs["Guidance"]);
            Assert.Equal("64x48", pairs["Size"]);
            Assert.Equal(GenerationParameters.ModelName(pipelines.Dev.Transformer.Config), pairs["Model"]);
            Assert.StartsWith("flux1-dev (hidden ", pairs["Model"]);   // the demo's tiny model is not the published one
            Assert.StartsWith("FluxNative ", pairs["Version"]);
            List<string> chunks = ImageMetadataReader.PngChunkTypes(file);
            Assert.True(chunks.IndexOf("tEXt") < chunks.IndexOf("IDAT"), string.Join(" ", chunks));
        }
    }

    [Theory]
    [InlineData(ImageFormat.Jpeg)]
    [InlineData(ImageFormat.Webp)]
    [InlineData(ImageFormat.Png)]
    public async Task Every_format_carries_the_same_text_and_non_latin_prompts_survive(ImageFormat format)
    {
        const string prompt = "un renard roux 狐 dans la neige 🦊 — «nuit»";
        GenerationRequest request = new() { Prompt = prompt, Width = 64, Height = 48, Steps = 2, Seed = 7, OutputFormat = format, OutputQuality = 90 };
        GenerationResult result = await pipelines.Dev.GenerateAsync(request);

        string? text = ImageMetadataReader.Parameters(result.Images[0].Bytes);
        Assert.Equal(GenerationParameters.Format(request, result.Plan, pipelines.Dev.Transformer.Config, 0), text);
        Assert.Equal(prompt, ImageMetadataReader.Split(text!).Prompt);
        if (format == ImageFormat.Png)
        {
            Assert.Contains("iTXt", ImageMetadataReader.PngChunkTypes(result.Images[0].Bytes));   // 狐 is not Latin-1
        }
    }

    [Theory]
    [InlineData(ImageFormat.Png)]
    [InlineData(ImageFormat.Jpeg)]
    [InlineData(ImageFormat.Webp)]
    public async Task Turning_metadata_off_leaves_only_the_pixels(ImageFormat format)
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev) with { OutputFormat = format };
        GenerationResult with = await pipelines.Dev.GenerateAsync(request);
        GenerationResult without = await pipelines.Dev.GenerateAsync(request with { WriteMetadata = false });

        Assert.NotNull(ImageMetadataReader.Parameters(with.Images[0].Bytes));
        Assert.Null(ImageMetadataReader.Parameters(without.Images[0].Bytes));
        Assert.Equal(Images.Decode(with.Images[0].Bytes, out _).Rgb, Images.Decode(without.Images[0].Bytes, out _).Rgb);
    }

    [Fact]
    public async Task Embeddings_schnell_and_given_latents_write_what_was_used()
    {
        GenerationResult schnell = await pipelines.Schnell.GenerateAsync(pipelines.Request(pipelines.Schnell, seed: 9));
        (string prompt, Dictionary<string, string> pairs) = ImageMetadataReader.Split(ImageMetadataReader.Parameters(schnell.Images[0].Bytes)!);
        Assert.Equal(GenerationParameters.EmbeddingsPrompt, prompt);
        Assert.Equal("9", pairs["Seed"]);
        Assert.StartsWith("flux1-schnell", pairs["Model"]);
        Assert.False(pairs.ContainsKey("Guidance"), "schnell has no guidance");
        Assert.False(pairs.ContainsKey("Distilled CFG Scale"));

        GenerationRequest given = pipelines.Request(pipelines.Dev) with { InitialLatents = LatentNoise.Generate(3, 1, 16, 6, 8) };
        GenerationResult latents = await pipelines.Dev.GenerateAsync(given);
        pairs = ImageMetadataReader.Split(ImageMetadataReader.Parameters(latents.Images[0].Bytes)!).Pairs;
        Assert.False(pairs.ContainsKey("Seed"), "the seed made no noise: the caller's latents did");
        Assert.Equal("64x48", pairs["Size"]);
    }

    [Fact]
    public void The_published_transformer_is_named_as_readers_expect()
    {
        FluxTransformerConfig tiny = pipelines.Dev.Transformer.Config;
        FluxTransformerConfig published = tiny with { HiddenSize = 3072, Depth = 19, DepthSingle = 38 };
        Assert.Equal("flux1-dev", GenerationParameters.ModelName(published));
        Assert.Equal("flux1-schnell", GenerationParameters.ModelName(published with { GuidanceEmbed = false }));
        Assert.DoesNotContain(",", GenerationParameters.ModelName(tiny), StringComparison.Ordinal);
    }

    [Fact]
    public void Prompts_cannot_break_the_file()
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev) with { PromptEmbeddings = null };
        GenerationPlan plan = pipelines.Dev.Plan(request with { Prompt = "x" });
        FluxTransformerConfig model = pipelines.Dev.Transformer.Config;
        byte[] rgb = new byte[64 * 48 * 3];

        // NUL (which would end the C string) and stray carriage returns.
        string text = GenerationParameters.Format(request with { Prompt = "a\0b\r\nc\rd" }, plan, model, 0);
        Assert.StartsWith("a\uFFFDb\nc\nd\nSteps: ", text, StringComparison.Ordinal);

        // Far longer than any file takes: cut at a character boundary (never inside 🦊's surrogate pair), with an ellipsis.
        string huge = string.Concat(Enumerable.Repeat("fox 🦊 ", 20_000));
        text = GenerationParameters.Format(request with { Prompt = huge }, plan, model, 0);
        int bytes = Encoding.UTF8.GetByteCount(text);
        Assert.InRange(bytes, Images.MaxParametersBytes - 8, Images.MaxParametersBytes);
        (string prompt, Dictionary<string, string> pairs) = ImageMetadataReader.Split(text);
        Assert.EndsWith("…", prompt, StringComparison.Ordinal);
        Assert.StartsWith(prompt[..^1], huge, StringComparison.Ordinal);
        Assert.False(char.IsHighSurrogate(prompt[^2]));
        Assert.Equal("48", pairs["Size"].Split('x')[1]);
        foreach (ImageFormat format in Enum.GetValues<ImageFormat>())
        {
            Assert.Equal(text, ImageMetadataReader.Parameters(Images.Encode(rgb, 64, 48, format, 80, text)));
        }

        // The longest prompt the pipeline accepts fits whole, even in three-byte characters.
        string longest = new('狐', FluxPipeline.MaxPromptLength);
        Assert.StartsWith(longest + "\n", GenerationParameters.Format(request with { Prompt = longest }, plan, model, 0), StringComparison.Ordinal);
    }

    [Fact]
    public void Images_Encode_refuses_text_it_cannot_store_whole()
    {
        byte[] rgb = new byte[4 * 4 * 3];
        var nul = Assert.Throws<ArgumentException>(() => Images.Encode(rgb, 4, 4, ImageFormat.Png, 80, "a\0b"));
        Assert.Contains("NUL", nul.Message);
        var tooLong = Assert.Throws<ArgumentException>(() => Images.Encode(rgb, 4, 4, ImageFormat.Jpeg, 80, new string('é', Images.MaxParametersBytes / 2 + 1)));
        Assert.Contains(Images.MaxParametersBytes.ToString(System.Globalization.CultureInfo.InvariantCulture), tooLong.Message);
        Assert.Null(ImageMetadataReader.Parameters(Images.Encode(rgb, 4, 4, ImageFormat.Webp, 80, "")));
    }
}
