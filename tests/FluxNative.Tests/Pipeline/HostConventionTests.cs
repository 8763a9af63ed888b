using FluxNative.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Testing;

namespace FluxNative.Tests.Pipeline;

/// <summary>The demo pipeline loaded with <see cref="FluxPipeline.LoadAsync(FluxPipelineSources, FluxPipelineOptions?, ILogger?, IProgress{FluxLoadProgress}?, CancellationToken)"/>, with its log and load progress kept.</summary>
public sealed class LoggedPipeline : IAsyncLifetime
{
    private readonly TempDirectory temp = new();

    public FakeLogger Logger { get; } = new();

    public List<(FluxLoadProgress Report, int Thread)> Progress { get; } = [];

    public int CallerThread { get; private set; }

    public FluxPipelineSources Sources { get; private set; } = new();

    public FluxPipeline Pipeline { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Sources = DemoModels.Write(temp.Path);
        CallerThread = Environment.CurrentManagedThreadId;
        Pipeline = await FluxPipeline.LoadAsync(Sources, DemoModels.Options with { MinSide = 16 }, Logger, new SyncProgress<FluxLoadProgress>(p => Progress.Add((p, Environment.CurrentManagedThreadId))));
    }

    public async Task DisposeAsync()
    {
        await Pipeline.DisposeAsync();
        temp.Dispose();
    }

    public GenerationRequest Request(long seed = 7) => new() { Prompt = "a lighthouse at dusk", Width = 64, Height = 48, Steps = 3, Seed = seed };
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the reporting thread (Progress&lt;T&gt; posts to the pool).</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}

/// <summary>
/// What a .NET host expects of the pipeline (issue 18 item 3): an asynchronous load off the caller's thread with
/// progress per part, ILogger logging, asynchronous disposal, raw pixels beside the file, previews through IProgress.
/// </summary>
public class HostConventionTests(LoggedPipeline loaded) : IClassFixture<LoggedPipeline>
{
    [Fact]
    public void LoadAsync_reports_each_part_before_and_after_loading_it_off_the_callers_thread()
    {
        // The demo has all four parts; each is reported starting, then done, in load order.
        FluxComponent[] order = [FluxComponent.Transformer, FluxComponent.Autoencoder, FluxComponent.ClipTextEncoder, FluxComponent.T5TextEncoder];
        Assert.Equal(order.SelectMany(c => new[] { (c, false), (c, true) }), loaded.Progress.Select(p => (p.Report.Component, p.Report.Done)));
        Assert.All(loaded.Progress, p => Assert.NotEqual(loaded.CallerThread, p.Thread));
        Assert.All(loaded.Progress, p => Assert.Equal(4, p.Report.ComponentsTotal));
        Assert.Equal(loaded.Sources.Transformer, loaded.Progress[0].Report.Path);

        // Fractions by bytes: never backwards, 0 before the first part, 1 after the last.
        double[] fractions = [.. loaded.Progress.Select(p => p.Report.Fraction)];
        Assert.Equal(0, fractions[0]);
        Assert.Equal(1, fractions[^1], 9);
        Assert.Equal(fractions.Order(), fractions);
    }

    [Fact]
    public void The_load_is_logged_part_by_part()
    {
        string[] messages = [.. loaded.Logger.Collector.GetSnapshot().Select(r => r.Message)];
        foreach (string part in new[] { "Transformer", "Autoencoder", "ClipTextEncoder", "T5TextEncoder" })
        {
            Assert.Contains(messages, m => m.StartsWith($"Loaded {part} from ", StringComparison.Ordinal));
        }

        Assert.Contains(messages, m => m.StartsWith("FLUX pipeline ready in ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Each_request_logs_its_warnings_and_its_timings()
    {
        // 64x48 is outside FLUX's trained 256-2048: a warning, logged when the request is accepted.
        GenerationResult result = await loaded.Pipeline.GenerateAsync(loaded.Request(seed: 11));

        IReadOnlyList<FakeLogRecord> records = loaded.Logger.Collector.GetSnapshot();
        Assert.Contains(records, r => r.Level == LogLevel.Warning && r.Message.Contains("outside FLUX's trained range", StringComparison.Ordinal)
            && r.Message.Contains("seed 11", StringComparison.Ordinal));
        // The timings line is written when the task completes, from a continuation: wait for it briefly.
        FakeLogRecord timings = await WaitForAsync(() => loaded.Logger.Collector.GetSnapshot()
            .LastOrDefault(r => r.Message.StartsWith("Generated 1 image(s) 64x48, 3 steps, seed 11", StringComparison.Ordinal)));
        Assert.Equal(LogLevel.Information, timings.Level);
        Assert.Contains("denoise", timings.Message, StringComparison.Ordinal);
        Assert.Equal(3, result.Timings.Steps);
    }

    [Fact]
    public async Task A_prompt_longer_than_CLIP_reads_is_logged_as_a_warning()
    {
        string prompt = string.Join(' ', Enumerable.Repeat("lighthouse", 90));
        await loaded.Pipeline.GenerateAsync(loaded.Request() with { Prompt = prompt, Width = 256, Height = 256, Steps = 1 });

        Assert.Contains(loaded.Logger.Collector.GetSnapshot(), r => r.Level == LogLevel.Warning
            && r.Message.Contains("CLIP tokens but CLIP reads 77", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Every_image_comes_with_its_raw_RGB_pixels_which_are_the_files_pixels()
    {
        GenerationResult result = await loaded.Pipeline.GenerateAsync(loaded.Request() with { NumImages = 2 });

        foreach (GeneratedImage image in result.Images)
        {
            Assert.Equal(3 * 64 * 48, image.Rgb.Length);
            // PNG is lossless: the file decodes to exactly the raw pixels.
            RgbImage decoded = Images.Decode(image.Bytes, out ImageFormat format);
            Assert.Equal((ImageFormat.Png, 64, 48), (format, decoded.Width, decoded.Height));
            Assert.True(image.Rgb.Span.SequenceEqual(decoded.Rgb));
        }
    }

    [Fact]
    public async Task Previews_come_with_the_steps_asked_for_at_the_latent_resolution()
    {
        var reports = new List<GenerationProgress>();
        GenerationResult result = await loaded.Pipeline.GenerateAsync(
            loaded.Request() with { Steps = 5, PreviewEvery = 2, NumImages = 2 }, new SyncProgress<GenerationProgress>(reports.Add));

        GenerationProgress[] steps = [.. reports.Where(r => r.Stage == GenerationStage.Denoising)];
        Assert.Equal([1, 2, 3, 4, 5], steps.Select(s => s.Step));
        // Every second step, and the last one.
        Assert.Equal([false, true, false, true, true], steps.Select(s => s.Previews is not null));
        foreach (GenerationProgress step in steps.Where(s => s.Previews is not null))
        {
            Assert.Equal(2, step.Previews!.Count);
            Assert.All(step.Previews, p => Assert.Equal((8, 6, 3 * 8 * 6), (p.Width, p.Height, p.Rgb.Length)));
        }

        Assert.All(reports.Where(r => r.Stage != GenerationStage.Denoising), r => Assert.Null(r.Previews));
        Assert.Equal(2, result.Images.Count);
    }

    [Fact]
    public void A_negative_PreviewEvery_is_refused_naming_the_field()
    {
        var error = Assert.Throws<GenerationRequestException>(() => loaded.Pipeline.Plan(loaded.Request() with { PreviewEvery = -1 }));
        Assert.Equal("preview_every", error.Field);
    }

    [Fact]
    public async Task Without_PreviewEvery_no_report_carries_a_preview()
    {
        var reports = new List<GenerationProgress>();
        await loaded.Pipeline.GenerateAsync(loaded.Request(), new SyncProgress<GenerationProgress>(reports.Add));

        Assert.NotEmpty(reports);
        Assert.All(reports, r => Assert.Null(r.Previews));
    }

    [Fact]
    public async Task A_load_cancelled_between_parts_ends_cancelled()
    {
        using var cancel = new CancellationTokenSource();
        // Cancelled as soon as the transformer is loaded: the autoencoder never starts.
        var progress = new SyncProgress<FluxLoadProgress>(p =>
        {
            if (p.Done)
            {
                cancel.Cancel();
            }
        });

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => FluxPipeline.LoadAsync(loaded.Sources, DemoModels.Options, progress, cancel.Token));
    }

    [Fact]
    public async Task A_load_that_fails_faults_its_task_and_says_why()
    {
        FluxPipelineSources broken = loaded.Sources with { Autoencoder = Path.Combine(Path.GetTempPath(), $"no-such-{Guid.NewGuid():N}.safetensors") };

        var error = await Assert.ThrowsAnyAsync<Exception>(() => FluxPipeline.LoadAsync(broken, DemoModels.Options));

        Assert.Contains("no-such-", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task DisposeAsync_stops_the_pipeline()
    {
        FluxPipeline pipeline = await FluxPipeline.LoadAsync(loaded.Sources with { Clip = null, T5 = null }, DemoModels.Options);
        await pipeline.DisposeAsync();
        await pipeline.DisposeAsync();   // twice is harmless, as for Dispose

        // GenerateAsync refuses at once, before any task exists.
        var request = new GenerationRequest { PromptEmbeddings = DemoModels.RandomEmbeddings(pipeline.Transformer.Config, 1), Width = 64, Height = 64, Steps = 1 };
        Assert.Throws<ObjectDisposedException>(() => { _ = pipeline.GenerateAsync(request); });
    }

    private static async Task<T> WaitForAsync<T>(Func<T?> find)
        where T : class
    {
        for (int i = 0; i < 200; i++)
        {
            if (find() is { } found)
            {
                return found;
            }

            await Task.Delay(10);
        }

        throw new TimeoutException("Not logged within 2 s.");
    }
}
