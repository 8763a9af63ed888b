namespace FluxNative.Tests.Pipeline;

/// <summary>
/// The pipeline's continuous batching: concurrent requests of one size share each transformer forward, a request
/// joins a running batch at a step boundary and leaves it when its own steps are done, and every image is the one
/// the request gets alone (to float rounding: a batched GEMM may sum in another order).
/// </summary>
public class BatchingTests(TinyPipelines pipelines) : IClassFixture<TinyPipelines>
{
    /// <summary>Largest |batched − alone| of the final latents (noise-scale values, about 1).</summary>
    private const float LatentTolerance = 1e-4f;

    private FluxPipeline Dev => pipelines.Dev;

    [Fact]
    public async Task Requests_given_together_share_each_step_and_get_what_they_would_get_alone()
    {
        GenerationRequest a = Request(seed: 11, steps: 4), b = Request(seed: 22, steps: 4, images: 2) with { Guidance = 5.0 };
        GenerationRequest c = Request(seed: 33, steps: 6) with { Guidance = 1.5 };   // other steps and guidance: same batch

        GenerationResult[] together = await GateAll(a, b, c);
        Assert.All(together, r => Assert.Equal(4, r.PeakBatchImages));
        for (int k = 0; k < 3; k++)
        {
            GenerationResult alone = await Dev.GenerateAsync(new[] { a, b, c }[k]);
            Assert.Equal(alone.Images.Count, alone.PeakBatchImages);
            AssertSameLatents(alone, together[k]);
        }

        Assert.Equal(22 + 1, together[1].Images[1].Seed);   // image k of a request is seed + k, batched or not
    }

    [Fact]
    public async Task A_request_that_arrives_mid_run_joins_at_a_step_boundary_and_a_finished_one_leaves()
    {
        GenerationRequest longer = Request(seed: 5, steps: 40, width: 128, height: 128);
        GenerationRequest shorter = Request(seed: 6, steps: 3, width: 128, height: 128);
        Task<GenerationResult>? joined = null;
        var stepsOfLonger = new List<int>();
        var progress = new Recorder(r =>
        {
            if (r.Stage == GenerationStage.Denoising)
            {
                stepsOfLonger.Add(r.Step);
                if (r.Step == 2)
                {
                    joined = Dev.GenerateAsync(shorter);   // while the longer one runs
                }
            }
        });

        GenerationResult first = await Dev.GenerateAsync(longer, progress);
        GenerationResult second = await joined!;
        Assert.Equal(Enumerable.Range(1, 40), stepsOfLonger);
        Assert.Equal(2, first.PeakBatchImages);
        Assert.Equal(2, second.PeakBatchImages);
        // The shorter one joined at step ≥ 3 of 40 and left after its own 3 steps, long before the longer one ended.
        Assert.True(second.Timings.Denoise < first.Timings.Denoise, $"{second.Timings.Denoise} vs {first.Timings.Denoise}");

        // Each at its own timestep in a shared forward: both match their runs alone.
        AssertSameLatents(await Dev.GenerateAsync(longer), first);
        AssertSameLatents(await Dev.GenerateAsync(shorter), second);
    }

    [Fact]
    public async Task Cancelling_one_request_of_a_batch_ends_it_at_once_and_the_others_finish_unchanged()
    {
        GenerationRequest kept = Request(seed: 7, steps: 30, width: 128, height: 128), dropped = kept with { Seed = 8 };
        using var cancel = new CancellationTokenSource();
        int droppedSteps = 0;
        var progress = new Recorder(r =>
        {
            if (r.Stage == GenerationStage.Denoising && ++droppedSteps == 3)
            {
                cancel.Cancel();
            }
        });

        Task<GenerationResult> keptTask, droppedTask;
        using (Gate.Hold(Dev))
        {
            keptTask = Dev.GenerateAsync(kept);
            droppedTask = Dev.GenerateAsync(dropped, progress, cancel.Token);
        }

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => droppedTask);
        Assert.Equal(3, droppedSteps);   // no step of it after the one that cancelled
        GenerationResult result = await keptTask;
        Assert.Equal(2, result.PeakBatchImages);
        AssertSameLatents(await Dev.GenerateAsync(kept), result);
    }

    [Fact]
    public async Task Requests_of_another_size_wait_their_turn_in_arrival_order()
    {
        GenerationRequest small = Request(seed: 1, steps: 2), large = Request(seed: 2, steps: 2, width: 96, height: 96);
        GenerationResult[] results = await GateAll(small, large, small with { Seed = 3 });
        Assert.Equal([1, 1, 1], results.Select(r => r.PeakBatchImages));   // the third does not overtake the second
        AssertSameLatents(await Dev.GenerateAsync(large), results[1]);
    }

    [Fact]
    public async Task MaxBatchImages_caps_a_shared_step_but_a_larger_request_still_runs_whole()
    {
        using var capped = new FluxPipeline(Dev.Transformer, Dev.Autoencoder, Dev.Options with { MaxBatchImages = 2 }, ownsModels: false, Dev.PromptEncoder);
        GenerationRequest one = Request(seed: 1, steps: 2);
        Task<GenerationResult>[] tasks;
        using (Gate.Hold(capped))
        {
            tasks = [capped.GenerateAsync(one), capped.GenerateAsync(one with { Seed = 2 }), capped.GenerateAsync(one with { Seed = 3 }),
                     capped.GenerateAsync(one with { Seed = 4, NumImages = 3 })];
        }

        GenerationResult[] results = await Task.WhenAll(tasks);
        Assert.Equal([2, 2, 1, 3], results.Select(r => r.PeakBatchImages));
        Assert.Throws<ArgumentException>(() => new FluxPipeline(Dev.Transformer, Dev.Autoencoder, Dev.Options with { MaxBatchImages = 0 }, ownsModels: false));
    }

    [Fact]
    public async Task Prompts_encoded_by_the_text_encoders_are_batched_too_and_match_alone()
    {
        GenerationRequest fox = new() { Prompt = $"a fox {Guid.NewGuid()}", Width = 64, Height = 48, Steps = 3, Seed = 4, ReturnLatents = true };
        GenerationRequest owl = fox with { Prompt = $"an owl {Guid.NewGuid()}", Seed = 9 };
        GenerationResult[] together = await GateAll(fox, owl, fox with { Seed = 10 });
        Assert.All(together, r => Assert.Equal(3, r.PeakBatchImages));
        AssertSameLatents(await Dev.GenerateAsync(fox), together[0]);
        AssertSameLatents(await Dev.GenerateAsync(owl), together[1]);
        Assert.True(together[2].Timings.TextEncoding < together[0].Timings.TextEncoding || together[2].Timings.TextEncoding == TimeSpan.Zero,
            "the same prompt right behind is not encoded again");
    }

    [Fact]
    public async Task A_progress_handler_that_throws_fails_its_own_request_only()
    {
        GenerationRequest good = Request(seed: 1, steps: 3), bad = Request(seed: 2, steps: 3);
        var throwing = new Recorder(r =>
        {
            if (r.Stage == GenerationStage.Denoising)
            {
                throw new InvalidOperationException("handler failed");
            }
        });
        Task<GenerationResult> goodTask, badTask;
        using (Gate.Hold(Dev))
        {
            goodTask = Dev.GenerateAsync(good);
            badTask = Dev.GenerateAsync(bad, throwing);
        }

        Assert.Equal("handler failed", (await Assert.ThrowsAsync<InvalidOperationException>(() => badTask)).Message);
        Assert.Single((await goodTask).Images);
    }

    [Fact]
    public async Task Schnell_batches_too()
    {
        FluxPipeline schnell = pipelines.Schnell;
        GenerationRequest a = pipelines.Request(schnell, seed: 3) with { ReturnLatents = true }, b = a with { Seed = 4 };
        Task<GenerationResult> ta, tb;
        using (Gate.Hold(schnell))
        {
            ta = schnell.GenerateAsync(a);
            tb = schnell.GenerateAsync(b);
        }

        GenerationResult[] results = await Task.WhenAll(ta, tb);
        Assert.All(results, r => Assert.Equal(2, r.PeakBatchImages));
        AssertSameLatents(await schnell.GenerateAsync(b), results[1]);
    }

    [Fact]
    public async Task Disposing_a_pipeline_with_requests_in_flight_fails_them_and_does_not_hang()
    {
        var pipeline = new FluxPipeline(Dev.Transformer, Dev.Autoencoder, Dev.Options, ownsModels: false, Dev.PromptEncoder);
        var started = new TaskCompletionSource();
        Task<GenerationResult> running = pipeline.GenerateAsync(Request(seed: 1, steps: 50, width: 128, height: 128),
            new Recorder(r => started.TrySetResult()));
        Task<GenerationResult> queued = pipeline.GenerateAsync(Request(seed: 2, steps: 2, width: 96, height: 96));
        await started.Task.WaitAsync(TimeSpan.FromSeconds(30));
        pipeline.Dispose();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => running);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => queued);
        Assert.Throws<ObjectDisposedException>(() => { _ = pipeline.GenerateAsync(Request(seed: 3, steps: 1)); });
    }

    [Fact]
    public async Task Step_caches_stay_with_their_images_in_a_shared_batch()
    {
        // A caching request of two images beside a lossless one and another caching one: each image keeps its own
        // cache, so each request gets what it gets alone, and the lossless one runs every block.
        var cache = new StepCacheOptions { Threshold = 10, WarmupSteps = 1, FinalSteps = 1, MaxConsecutive = 2 };
        GenerationRequest cached = Request(seed: 41, steps: 8, images: 2) with { StepCache = cache };
        GenerationRequest lossless = Request(seed: 42, steps: 8);
        GenerationRequest other = Request(seed: 43, steps: 6) with { SpeedMode = SpeedMode.Fastest, StepCache = cache with { MaxConsecutive = 1 } };

        GenerationResult[] together = await GateAll(cached, lossless, other);
        Assert.All(together, r => Assert.Equal(4, r.PeakBatchImages));
        Assert.Equal(together[1].BlocksTotal, together[1].BlocksComputed);
        Assert.True(together[0].CachedSteps > 0 && together[2].CachedSteps > 0, "the caching requests reused no step");
        for (int k = 0; k < 3; k++)
        {
            GenerationResult alone = await Dev.GenerateAsync(new[] { cached, lossless, other }[k]);
            Assert.Equal(alone.BlocksComputed, together[k].BlocksComputed);
            Assert.Equal(alone.CachedSteps, together[k].CachedSteps);
            AssertSameLatents(alone, together[k]);
        }
    }

    private GenerationRequest Request(long seed, int steps, int width = 64, int height = 48, int images = 1) =>
        pipelines.Request(Dev, seed) with { Steps = steps, Width = width, Height = height, NumImages = images, ReturnLatents = true };

    /// <summary>Runs the requests so that all are queued before any starts: a blocker of another size holds the pipeline meanwhile.</summary>
    private async Task<GenerationResult[]> GateAll(params GenerationRequest[] requests)
    {
        var tasks = new List<Task<GenerationResult>>();
        using (Gate.Hold(Dev))
        {
            tasks.AddRange(requests.Select(r => Dev.GenerateAsync(r)));
        }

        return await Task.WhenAll(tasks);
    }

    private static void AssertSameLatents(GenerationResult expected, GenerationResult actual)
    {
        float[] e = expected.FinalLatents!, a = actual.FinalLatents!;
        Assert.Equal(e.Length, a.Length);
        float worst = 0;
        for (int i = 0; i < e.Length; i++)
        {
            Assert.False(float.IsNaN(a[i]), $"NaN at {i}");
            worst = Math.Max(worst, Math.Abs(e[i] - a[i]));
        }

        Assert.True(worst <= LatentTolerance, $"batched and alone differ by {worst} (tolerance {LatentTolerance})");
    }

    /// <summary>
    /// Holds a pipeline's denoising thread inside the progress report of a request of a size no test uses, until
    /// disposed: the requests made meanwhile queue up and are prepared, then the blocker is cancelled and released,
    /// and they start together.
    /// </summary>
    private sealed class Gate : IDisposable
    {
        private readonly FluxPipeline pipeline;
        private readonly CancellationTokenSource cancel = new();
        private readonly ManualResetEventSlim release = new();
        private readonly Task<GenerationResult> blocker;

        private Gate(FluxPipeline pipeline)
        {
            this.pipeline = pipeline;
            var running = new TaskCompletionSource();
            GenerationRequest request = new()
            {
                PromptEmbeddings = DemoModels.RandomEmbeddings(pipeline.Transformer.Config, 99),
                Width = 160,
                Height = 32,
                Steps = 50,
                Seed = 1,
            };
            blocker = pipeline.GenerateAsync(request, new Recorder(r =>
            {
                if (r.Stage == GenerationStage.Denoising)
                {
                    running.TrySetResult();
                    release.Wait(TimeSpan.FromSeconds(60));
                }
            }), cancel.Token);
            Assert.True(running.Task.Wait(TimeSpan.FromSeconds(30)), "the blocker did not start");
        }

        public static Gate Hold(FluxPipeline pipeline) => new(pipeline);

        public void Dispose()
        {
            Assert.True(SpinWait.SpinUntil(() => pipeline.AllWaitingReady, TimeSpan.FromSeconds(30)), "the queued requests were not prepared");
            cancel.Cancel();
            release.Set();
            Assert.ThrowsAny<OperationCanceledException>(() => blocker.GetAwaiter().GetResult());
            cancel.Dispose();
        }
    }

    private sealed class Recorder(Action<GenerationProgress> onReport) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => onReport(value);
    }
}
