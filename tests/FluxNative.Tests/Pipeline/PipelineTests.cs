using FluxNative.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>Tiny dev and schnell pipelines (the demo's models), shared by the tests of one class.</summary>
public sealed class TinyPipelines : IDisposable
{
    private readonly TempDirectory temp = new();

    public TinyPipelines()
    {
        FluxPipelineSources sources = DemoModels.Write(temp.Path);
        Dev = FluxPipeline.Load(sources, DemoModels.Options with { MinSide = 16 });
        string schnell = temp.File("schnell.safetensors");
        TinyModel.Write(new TinyModelOptions { Variant = FluxVariant.Schnell, Seed = 2 }, schnell);
        Schnell = FluxPipeline.Load(sources with { Transformer = schnell }, DemoModels.Options with { MinSide = 16 });
    }

    public FluxPipeline Dev { get; }

    public FluxPipeline Schnell { get; }

    public GenerationRequest Request(FluxPipeline pipeline, long seed = 5) => new()
    {
        PromptEmbeddings = DemoModels.RandomEmbeddings(pipeline.Transformer.Config, seed),
        Width = 64,
        Height = 48,
        Steps = 3,
        Seed = seed,
    };

    public void Dispose()
    {
        Dev.Dispose();
        Schnell.Dispose();
        temp.Dispose();
    }
}

public class PipelineTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    [Theory]
    [InlineData("1:1", 1024, 1024, 1024)]
    [InlineData("16:9", 1024, 1024, 576)]
    [InlineData("21:9", 1024, 1024, 432)]    // 438.9 -> nearest multiple of 16
    [InlineData("9:21", 1024, 432, 1024)]
    [InlineData("3:2", 1024, 1024, 688)]     // 682.7 -> 688
    [InlineData("2:3", 768, 512, 768)]
    [InlineData("4:5", 1024, 816, 1024)]     // 819.2 -> 816
    [InlineData("5:4", 1024, 1024, 816)]
    [InlineData("3:4", 1024, 768, 1024)]
    [InlineData("4:3", 1024, 1024, 768)]
    [InlineData("9:16", 1360, 768, 1360)]    // 765 -> 768
    public void Aspect_ratio_and_image_size_give_sides_in_multiples_of_16(string ratio, int imageSize, int width, int height)
    {
        GenerationPlan plan = pipelines.Dev.Plan(pipelines.Request(pipelines.Dev) with { Width = null, Height = null, AspectRatio = ratio, ImageSize = imageSize });
        Assert.Equal((width, height), (plan.Width, plan.Height));
        Assert.Equal((width / 8, height / 8), (plan.LatentWidth, plan.LatentHeight));
    }

    [Fact]
    public void Defaults_are_filled_in()
    {
        GenerationPlan dev = pipelines.Dev.Plan(new GenerationRequest { PromptEmbeddings = pipelines.Request(pipelines.Dev).PromptEmbeddings });
        Assert.Equal((1024, 1024, 28, 3.5, 1, ImageFormat.Png, 80), (dev.Width, dev.Height, dev.Steps, dev.Guidance, dev.NumImages, dev.Format, dev.Quality));
        Assert.InRange(dev.Seed, 0, int.MaxValue);
        Assert.Equal(4, pipelines.Schnell.Plan(pipelines.Request(pipelines.Schnell) with { Steps = null }).Steps);
        // Explicit sides go to the nearest multiple of 16, halves up: 1000 = 62.5 x 16 -> 1008; 1000 - 8 -> 992.
        Assert.Equal((1008, 992), Size(pipelines.Dev.Plan(pipelines.Request(pipelines.Dev) with { Width = 1000, Height = 999 })));
    }

    private static (int, int) Size(GenerationPlan plan) => (plan.Width, plan.Height);

    [Fact]
    public void Schnell_accepts_and_ignores_guidance()
    {
        Assert.Equal(7.0, pipelines.Schnell.Plan(pipelines.Request(pipelines.Schnell) with { Guidance = 7 }).Guidance);
    }

    [Theory]
    [InlineData("steps", 0)]
    [InlineData("steps", 51)]
    [InlineData("guidance", -0.5)]
    [InlineData("guidance", 10.5)]
    [InlineData("guidance", double.NaN)]
    [InlineData("num_outputs", 0)]
    [InlineData("num_outputs", 11)]
    [InlineData("output_quality", 0)]
    [InlineData("output_quality", 101)]
    [InlineData("seed", -2)]
    [InlineData("image_size", 32768)]
    [InlineData("aspect_ratio", 0)]
    [InlineData("width", 0)]
    [InlineData("height", 20000)]
    public void Bad_values_are_refused_with_the_field_and_the_reason(string field, double value)
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev);
        request = field switch
        {
            "steps" => request with { Steps = (int)value },
            "guidance" => request with { Guidance = value },
            "num_outputs" => request with { NumImages = (int)value },
            "output_quality" => request with { OutputQuality = (int)value },
            "seed" => request with { Seed = (long)value },
            "image_size" => request with { Width = null, Height = null, ImageSize = (int)value },
            "aspect_ratio" => request with { Width = null, Height = null, AspectRatio = "7:5" },
            "width" => request with { Width = null },
            "height" => request with { Height = (int)value },
            _ => throw new ArgumentOutOfRangeException(nameof(field)),
        };
        var e = Assert.Throws<GenerationRequestException>(() => pipelines.Dev.Plan(request));
        Assert.Equal(field, e.Field);
        Assert.Contains(field == "num_outputs" ? "images" : field, e.Message);
    }

    [Fact]
    public void A_prompt_without_text_encoders_says_what_to_pass()
    {
        using var bare = new FluxPipeline(pipelines.Dev.Transformer, pipelines.Dev.Autoencoder, pipelines.Dev.Options, ownsModels: false);
        var e = Assert.Throws<GenerationRequestException>(() => bare.Plan(new GenerationRequest { Prompt = "a red fox" }));
        Assert.Equal("prompt", e.Field);
        Assert.Contains("no text encoders", e.Message);
        Assert.Contains("[B, L, 32]", e.Message);
        Assert.Equal("prompt", Assert.Throws<GenerationRequestException>(() => pipelines.Dev.Plan(new GenerationRequest())).Field);
    }

    [Fact]
    public async Task A_prompt_is_encoded_by_the_text_encoders_once_and_then_cached()
    {
        PromptEncoder encoder = pipelines.Dev.PromptEncoder!;
        string prompt = $"a lighthouse at dusk, {Guid.NewGuid()}";
        var request = new GenerationRequest { Prompt = prompt, Width = 64, Height = 48, Steps = 2, Seed = 3 };
        int misses = encoder.CacheMisses, hits = encoder.CacheHits;
        GenerationResult first = await pipelines.Dev.GenerateAsync(request);
        GenerationResult second = await pipelines.Dev.GenerateAsync(request);
        Assert.Equal(misses + 1, encoder.CacheMisses);
        Assert.Equal(hits + 1, encoder.CacheHits);
        Assert.Equal(first.Images[0].Bytes, second.Images[0].Bytes);

        // Pixels, not file bytes, from here: the files also carry the prompt (or "(prompt embeddings)") as metadata.
        PromptEmbeddings embeddings = encoder.Encode(prompt);
        Assert.Equal((1, 64, 32, 32), (embeddings.Batch, embeddings.Tokens, embeddings.ContextDim, embeddings.PooledDim));
        GenerationResult other = await pipelines.Dev.GenerateAsync(request with { Prompt = "a lighthouse at noon" });
        Assert.NotEqual(Pixels(first), Pixels(other));

        // The same embeddings passed by hand give the same image.
        GenerationResult given = await pipelines.Dev.GenerateAsync(request with { Prompt = null, PromptEmbeddings = embeddings });
        Assert.Equal(Pixels(first), Pixels(given));
    }

    private static byte[] Pixels(GenerationResult result) => Images.Decode(result.Images[0].Bytes, out _).Rgb;

    [Fact]
    public void The_prompt_cache_is_bounded_and_evicts_the_least_recently_used()
    {
        using var small = new PromptEncoder(
            FluxNative.Tokenizers.ClipTokenizer.FromDirectory(Path.Combine(DemoModels.TokenizerDirectory, "clip")), pipelines.Dev.PromptEncoder!.Clip,
            FluxNative.Tokenizers.T5Tokenizer.FromDirectory(Path.Combine(DemoModels.TokenizerDirectory, "t5")), pipelines.Dev.PromptEncoder.T5,
            t5MaxLength: 16, cacheCapacity: 2, ownsEncoders: false);
        small.Encode("a");
        small.Encode("b");
        small.Encode("a");      // hit; "b" is now the least recently used
        small.Encode("c");      // evicts "b"
        small.Encode("a");      // hit
        small.Encode("b");      // miss again
        Assert.Equal((2, 4), (small.CacheHits, small.CacheMisses));
    }

    [Fact]
    public void Embeddings_and_latents_of_the_wrong_shape_are_refused()
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev);
        PromptEmbeddings e = request.PromptEmbeddings!;
        Assert.Equal("prompt_embeds", Assert.Throws<GenerationRequestException>(() =>
            pipelines.Dev.Plan(request with { PromptEmbeddings = e with { Txt = e.Txt[..^1] } })).Field);
        Assert.Equal("prompt_embeds", Assert.Throws<GenerationRequestException>(() =>
            pipelines.Dev.Plan(request with { NumImages = 3, PromptEmbeddings = e with { Batch = 2 } })).Field);
        Assert.Equal("latents", Assert.Throws<GenerationRequestException>(() =>
            pipelines.Dev.Plan(request with { InitialLatents = new float[16 * 6 * 7] })).Field);
    }

    [Fact]
    public async Task A_fixed_seed_gives_the_same_image_and_image_k_is_seed_plus_k()
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev, seed: 77);
        GenerationResult batch = await pipelines.Dev.GenerateAsync(request with { NumImages = 2 });
        GenerationResult again = await pipelines.Dev.GenerateAsync(request);
        GenerationResult second = await pipelines.Dev.GenerateAsync(request with { Seed = 78 });

        Assert.Equal([77L, 78L], batch.Images.Select(i => i.Seed!.Value));
        Assert.Equal(batch.Images[0].Bytes, again.Images[0].Bytes);
        Assert.Equal(batch.Images[1].Bytes, second.Images[0].Bytes);
        Assert.NotEqual(Images.Decode(batch.Images[0].Bytes, out _).Rgb, Images.Decode(batch.Images[1].Bytes, out _).Rgb);   // not just the Seed in the metadata
    }

    [Theory]
    [InlineData(ImageFormat.Png)]
    [InlineData(ImageFormat.Jpeg)]
    [InlineData(ImageFormat.Webp)]
    public async Task Every_output_format_decodes_to_the_requested_size(ImageFormat format)
    {
        GenerationResult result = await pipelines.Schnell.GenerateAsync(pipelines.Request(pipelines.Schnell) with { OutputFormat = format, OutputQuality = 90 });
        RgbImage image = Images.Decode(result.Images[0].Bytes, out ImageFormat decoded);
        Assert.Equal(format, decoded);
        Assert.Equal((64, 48), (image.Width, image.Height));
        Assert.Equal((64, 48, format), (result.Images[0].Width, result.Images[0].Height, result.Images[0].Format));
    }

    [Fact]
    public async Task Progress_is_reported_after_every_step_and_timings_add_up()
    {
        var reports = new List<GenerationProgress>();
        var progress = new Recorder(reports);
        GenerationResult result = await pipelines.Dev.GenerateAsync(pipelines.Request(pipelines.Dev) with { Steps = 4 }, progress);

        Assert.Equal([1, 2, 3, 4], reports.Where(r => r.Stage == GenerationStage.Denoising).Select(r => r.Step));
        Assert.All(reports, r => Assert.Equal(4, r.TotalSteps));
        Assert.Equal(GenerationStage.Preparing, reports[0].Stage);
        Assert.Contains(reports, r => r.Stage == GenerationStage.Decoding);
        Assert.True(reports.Where(r => r.Step > 0).All(r => r.StepsPerSecond > 0));
        GenerationTimings t = result.Timings;
        Assert.True(t.Total >= t.Prepare + t.Denoise + t.Decode + t.Encode - TimeSpan.FromMilliseconds(1));
        Assert.Equal(4, t.Steps);
    }

    [Fact]
    public async Task Images_larger_than_the_decode_tile_are_decoded_in_tiles_close_to_whole()
    {
        GenerationRequest request = pipelines.Request(pipelines.Dev) with { Width = 128, Height = 96 };
        GenerationResult whole = await pipelines.Dev.GenerateAsync(request);
        using var tiled = new FluxPipeline(pipelines.Dev.Transformer, pipelines.Dev.Autoencoder,
            pipelines.Dev.Options with { DecodeTile = 8, DecodeTileOverlap = 2 }, ownsModels: false);
        GenerationResult result = await tiled.GenerateAsync(request);

        byte[] a = Pixels(whole), b = Pixels(result);
        double squared = a.Zip(b, (x, y) => (double)(x - y) * (x - y)).Sum() / a.Length;
        double psnr = 10 * Math.Log10(255.0 * 255.0 / squared);
        Assert.True(squared > 0, "16x12 latent cells in tiles of 8 are not one decode");
        Assert.True(psnr > 20, $"PSNR {psnr:F1} dB");

        foreach ((int tile, int overlap) in new[] { (-1, 2), (8, 0), (8, 5) })
        {
            var e = Assert.Throws<ArgumentException>(() => new FluxPipeline(pipelines.Dev.Transformer, pipelines.Dev.Autoencoder,
                pipelines.Dev.Options with { DecodeTile = tile, DecodeTileOverlap = overlap }, ownsModels: false));
            Assert.Contains("DecodeTile", e.Message);
        }
    }

    [Fact]
    public async Task Cancelling_mid_run_stops_promptly_and_the_pipeline_still_works()
    {
        using var cancel = new CancellationTokenSource();
        int stepsSeen = 0;
        var progress = new Recorder(null, r =>
        {
            if (r.Stage == GenerationStage.Denoising && ++stepsSeen == 2)
            {
                cancel.Cancel();
            }
        });
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            pipelines.Dev.GenerateAsync(pipelines.Request(pipelines.Dev) with { Steps = 50 }, progress, cancel.Token));
        Assert.Equal(2, stepsSeen);   // no step ran after the one that cancelled

        GenerationResult after = await pipelines.Dev.GenerateAsync(pipelines.Request(pipelines.Dev));
        Assert.Single(after.Images);
    }

    [Fact]
    public unsafe void A_token_sets_the_flag_the_library_polls()
    {
        // The native side of cancellation (the forward stops at the next block boundary once the flag is set)
        // is tested in native/tests/test_flux_transformer.cpp; this is the managed bridge to it.
        using var source = new CancellationTokenSource();
        using var cancellation = new NativeCancellation(source.Token);
        Assert.Equal(0, *cancellation.Pointer);
        source.Cancel();
        Assert.Equal(1, *cancellation.Pointer);
        var e = Assert.Throws<OperationCanceledException>(() => NativeCancellation.ThrowIfFailed(FluxStatus.Cancelled, source.Token));
        Assert.Equal(source.Token, e.CancellationToken);
        Assert.Throws<FluxNativeException>(() => NativeCancellation.ThrowIfFailed(FluxStatus.Format, source.Token));
    }

    private sealed class Recorder(List<GenerationProgress>? into, Action<GenerationProgress>? then = null) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value)
        {
            into?.Add(value);
            then?.Invoke(value);
        }
    }
}
