namespace FluxNative.Tests.Pipeline;

/// <summary>
/// Speed modes through the pipeline (step caching, <see cref="StepCacheOptions"/>): threshold 0 is the uncached run bit
/// for bit, caching really skips blocks and is deterministic, cancellation and progress still work in cached runs,
/// and the names parse. Batching with caches: <see cref="BatchingTests"/>.
/// </summary>
public class SpeedModeTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    private FluxPipeline Dev => pipelines.Dev;

    private GenerationRequest Request(long seed = 5, int steps = 12) =>
        pipelines.Request(Dev, seed) with { Steps = steps, ReturnLatents = true };

    [Fact]
    public async Task A_cached_run_with_threshold_zero_equals_the_uncached_run_bit_for_bit()
    {
        GenerationResult plain = await Dev.GenerateAsync(Request());
        GenerationResult cached = await Dev.GenerateAsync(Request() with { StepCache = new StepCacheOptions { Threshold = 0, TailBlocks = 1 } });
        Assert.NotNull(cached.Plan.StepCache);
        Assert.Equal(plain.FinalLatents, cached.FinalLatents);
        Assert.True(plain.Images[0].Rgb.Span.SequenceEqual(cached.Images[0].Rgb.Span));
        int blocks = Dev.Transformer.Config.Depth + Dev.Transformer.Config.DepthSingle;
        Assert.Equal(12L * blocks, cached.BlocksTotal);
        Assert.Equal(cached.BlocksTotal, cached.BlocksComputed);
        Assert.Equal(0, cached.CachedSteps);
        Assert.Equal(1.0, plain.BlocksComputedShare);
    }

    [Fact]
    public async Task Caching_skips_blocks_deterministically_and_changes_the_result_a_little()
    {
        var cache = new StepCacheOptions { Threshold = 10, HeadBlocks = 1, WarmupSteps = 2, FinalSteps = 2, MaxConsecutive = 3 };
        GenerationResult plain = await Dev.GenerateAsync(Request());
        GenerationResult first = await Dev.GenerateAsync(Request() with { StepCache = cache });
        GenerationResult again = await Dev.GenerateAsync(Request() with { StepCache = cache });

        // 12 steps: 2 warm-up and 2 final steps run in full; of the 8 between, runs of 3 reused steps after each full one.
        int blocks = Dev.Transformer.Config.Depth + Dev.Transformer.Config.DepthSingle;
        Assert.Equal(6, first.CachedSteps);
        Assert.Equal((6L * blocks) + (6L * 1), first.BlocksComputed);
        Assert.Equal(first.FinalLatents, again.FinalLatents);   // deterministic for a seed
        double num = 0, den = 0;
        for (int i = 0; i < plain.FinalLatents!.Length; i++)
        {
            Assert.True(float.IsFinite(first.FinalLatents![i]));
            num += Math.Pow(first.FinalLatents[i] - plain.FinalLatents[i], 2);
            den += Math.Pow(plain.FinalLatents[i], 2);
        }

        double relativeL2 = Math.Sqrt(num / den);
        Assert.InRange(relativeL2, 1e-6, 0.5);   // an approximation of the lossless run, not the run itself
    }

    [Fact]
    public async Task Progress_reports_every_step_and_cancellation_stops_a_cached_run()
    {
        var steps = new List<int>();
        GenerationResult done = await Dev.GenerateAsync(Request() with { SpeedMode = SpeedMode.Fastest, StepCache = new StepCacheOptions { Threshold = 10 } },
            new SyncProgress<GenerationProgress>(p =>
            {
                if (p.Stage == GenerationStage.Denoising)
                {
                    steps.Add(p.Step);
                }
            }));
        Assert.Equal(Enumerable.Range(1, 12), steps);
        Assert.True(done.CachedSteps > 0);

        using var cancel = new CancellationTokenSource();
        int seen = 0;
        Task<GenerationResult> run = Dev.GenerateAsync(Request(steps: 40) with { StepCache = new StepCacheOptions { Threshold = 10 } },
            new SyncProgress<GenerationProgress>(p =>
            {
                if (p.Stage == GenerationStage.Denoising && ++seen == 4)
                {
                    cancel.Cancel();
                }
            }), cancel.Token);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => run);
        Assert.InRange(seen, 4, 5);

        // The pipeline goes on: the next cached request runs from a fresh cache of its own.
        GenerationResult after = await Dev.GenerateAsync(Request() with { StepCache = new StepCacheOptions { Threshold = 10 } });
        Assert.Equal(done.BlocksComputed, after.BlocksComputed);
    }

    [Fact]
    public void Modes_map_to_their_caching_and_bad_options_name_the_field()
    {
        Assert.Null(Dev.Plan(Request()).StepCache);
        Assert.Null(Dev.Plan(Request() with { SpeedMode = SpeedMode.Lossless }).StepCache);
        double previous = 0;
        foreach (SpeedMode mode in new[] { SpeedMode.Juiced, SpeedMode.ExtraJuiced, SpeedMode.Fastest })
        {
            StepCacheOptions options = Dev.Plan(Request() with { SpeedMode = mode }).StepCache!;
            Assert.True(options.Threshold > previous, $"{mode} caches no more than the mode before it");
            previous = options.Threshold;
        }

        var e = Assert.Throws<GenerationRequestException>(() => Dev.Plan(Request() with { StepCache = new StepCacheOptions { HeadBlocks = 0 } }));
        Assert.Equal("head_blocks", e.Field);
        e = Assert.Throws<GenerationRequestException>(() => Dev.Plan(Request() with { StepCache = new StepCacheOptions { Threshold = double.NaN } }));
        Assert.Equal("threshold", e.Field);
        e = Assert.Throws<GenerationRequestException>(() => Dev.Plan(Request() with { SpeedMode = (SpeedMode)9 }));
        Assert.Equal("speed_mode", e.Field);
    }

    [Theory]
    [InlineData("lossless", SpeedMode.Lossless)]
    [InlineData("default", SpeedMode.Lossless)]
    [InlineData("", SpeedMode.Lossless)]
    [InlineData("Juiced 🔥 (default)", SpeedMode.Juiced)]
    [InlineData("extra_juiced", SpeedMode.ExtraJuiced)]
    [InlineData("Extra Juiced 🚀 (even more speed)", SpeedMode.ExtraJuiced)]
    [InlineData("extra-juiced", SpeedMode.ExtraJuiced)]
    [InlineData("FASTEST", SpeedMode.Fastest)]
    public void Names_and_hosted_labels_parse(string text, SpeedMode expected)
    {
        Assert.True(SpeedModes.TryParse(text, out SpeedMode mode));
        Assert.Equal(expected, mode);
    }

    [Theory]
    [InlineData("turbo")]
    [InlineData("extra")]
    [InlineData(null)]
    public void Other_names_do_not_parse(string? text) => Assert.False(SpeedModes.TryParse(text, out _));
}
