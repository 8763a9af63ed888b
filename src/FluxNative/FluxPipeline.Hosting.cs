using System.Diagnostics;
using FluxNative.Tokenizers;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace FluxNative;

/// <summary>A part of a FLUX pipeline, as <see cref="FluxPipeline.LoadAsync(FluxPipelineSources, FluxPipelineOptions?, IProgress{FluxLoadProgress}?, CancellationToken)"/> loads it.</summary>
public enum FluxComponent
{
    /// <summary>The flow transformer (23.8 GB in bf16 for the published [dev]).</summary>
    Transformer,

    /// <summary>The autoencoder (0.3 GB).</summary>
    Autoencoder,

    /// <summary>The CLIP text encoder and its tokenizer.</summary>
    ClipTextEncoder,

    /// <summary>The T5 encoder and its tokenizer (9.5 GB in bf16).</summary>
    T5TextEncoder,
}

/// <summary>Progress of a pipeline load: reported when each part starts loading and when it is done.</summary>
/// <param name="Component">The part this report is about.</param>
/// <param name="Path">Where it is loaded from (a file or a folder).</param>
/// <param name="Done">False when the part starts loading, true when it is loaded.</param>
/// <param name="ComponentsDone">Parts loaded so far (this one included when <paramref name="Done"/>).</param>
/// <param name="ComponentsTotal">Parts in all: 2 without text encoders, 4 with.</param>
/// <param name="BytesDone">Bytes of checkpoint files loaded so far.</param>
/// <param name="BytesTotal">Bytes of checkpoint files in all (their sizes on disk).</param>
/// <param name="Elapsed">Time since the load began.</param>
public sealed record FluxLoadProgress(
    FluxComponent Component, string Path, bool Done, int ComponentsDone, int ComponentsTotal, long BytesDone, long BytesTotal, TimeSpan Elapsed)
{
    /// <summary>The part of the load done, 0–1, by bytes (the parts differ in size by a factor of 80).</summary>
    public double Fraction => BytesTotal > 0 ? (double)BytesDone / BytesTotal : (double)ComponentsDone / Math.Max(1, ComponentsTotal);
}

/// <summary>The host-facing side of <see cref="FluxPipeline"/>: asynchronous loading with progress, logging, asynchronous disposal.</summary>
public sealed partial class FluxPipeline : IAsyncDisposable
{
    private readonly ILogger logger = NullLogger.Instance;
    private readonly Lock previewGate = new();
    private LatentPreview? preview;

    /// <summary>Builds a pipeline from loaded models, logging to <paramref name="logger"/> (load, per-request timings, warnings).</summary>
    /// <param name="transformer">The flow transformer.</param>
    /// <param name="autoencoder">The autoencoder.</param>
    /// <param name="options">Size bounds and load settings (defaults when null).</param>
    /// <param name="ownsModels">Dispose the models with the pipeline.</param>
    /// <param name="promptEncoder">The text encoders, or null.</param>
    /// <param name="logger">Where the pipeline logs; null for nowhere.</param>
    public FluxPipeline(FluxTransformer transformer, Autoencoder autoencoder, FluxPipelineOptions? options, bool ownsModels, PromptEncoder? promptEncoder, ILogger? logger)
        : this(transformer, autoencoder, options, ownsModels, promptEncoder)
    {
        this.logger = logger ?? NullLogger.Instance;
    }

    /// <summary>
    /// Loads the pipeline on a thread of its own and returns at once: the caller's thread (a host's start-up, a UI)
    /// is never blocked by the gigabytes the native loader reads. Progress is reported before and after each part.
    /// </summary>
    /// <param name="sources">Where the parts are.</param>
    /// <param name="options">How to load them (defaults when null).</param>
    /// <param name="progress">Told when each part starts and finishes loading.</param>
    /// <param name="cancellationToken">
    /// Checked between parts: a cancelled load frees what it had loaded and ends with <see cref="OperationCanceledException"/>
    /// (a part already loading finishes first; the native loader has no cancellation point).
    /// </param>
    /// <exception cref="GenerationRequestException">No model is given, or a folder lacks a part (thrown by the task).</exception>
    /// <exception cref="FluxNativeException">A checkpoint is missing, corrupt or not what it should be (thrown by the task).</exception>
    public static Task<FluxPipeline> LoadAsync(
        FluxPipelineSources sources, FluxPipelineOptions? options = null, IProgress<FluxLoadProgress>? progress = null, CancellationToken cancellationToken = default) =>
        LoadAsync(sources, options, logger: null, progress, cancellationToken);

    /// <summary>As <see cref="LoadAsync(FluxPipelineSources, FluxPipelineOptions?, IProgress{FluxLoadProgress}?, CancellationToken)"/>, logging the load and then every request to <paramref name="logger"/>.</summary>
    /// <param name="sources">Where the parts are.</param>
    /// <param name="options">How to load them (defaults when null).</param>
    /// <param name="logger">Where the pipeline logs: each part's load time, each request's timings and warnings.</param>
    /// <param name="progress">Told when each part starts and finishes loading.</param>
    /// <param name="cancellationToken">Checked between parts.</param>
    public static Task<FluxPipeline> LoadAsync(
        FluxPipelineSources sources, FluxPipelineOptions? options, ILogger? logger, IProgress<FluxLoadProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (cancellationToken.IsCancellationRequested)
        {
            return Task.FromCanceled<FluxPipeline>(cancellationToken);
        }

        // A dedicated thread, not a pool thread: a load reads for minutes and would hold a pool thread all that time.
        return Task.Factory.StartNew(
            () => LoadCore(sources, options, logger, progress, cancellationToken),
            cancellationToken, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    /// <summary>Stops the pipeline's threads and frees the models, off the caller's thread (a running step stops at its next check).</summary>
    public ValueTask DisposeAsync() =>
        new(Task.Factory.StartNew(Dispose, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default));

    /// <summary>The one implementation of loading: <see cref="Load"/> and <see cref="LoadAsync(FluxPipelineSources, FluxPipelineOptions?, ILogger?, IProgress{FluxLoadProgress}?, CancellationToken)"/> call it.</summary>
    internal static FluxPipeline LoadCore(
        FluxPipelineSources sources, FluxPipelineOptions? options, ILogger? logger, IProgress<FluxLoadProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sources);
        options ??= new FluxPipelineOptions();
        logger ??= NullLogger.Instance;
        string transformerPath = sources.ResolveTransformer(), autoencoderPath = sources.ResolveAutoencoder();
        PromptEncoderSources? text = sources.ResolvePromptEncoder();
        var parts = new List<(FluxComponent Component, string Path, long Bytes)>
        {
            (FluxComponent.Transformer, transformerPath, SizeOnDisk(transformerPath)),
            (FluxComponent.Autoencoder, autoencoderPath, SizeOnDisk(autoencoderPath)),
        };
        if (text is not null)
        {
            parts.Add((FluxComponent.ClipTextEncoder, text.Clip, SizeOnDisk(text.Clip)));
            parts.Add((FluxComponent.T5TextEncoder, text.T5, SizeOnDisk(text.T5)));
        }

        long bytesTotal = parts.Sum(p => p.Bytes), bytesDone = 0;
        int done = 0;
        long started = Stopwatch.GetTimestamp();
        logger.LogInformation("Loading FLUX pipeline on {Device}: {Parts} parts, {Gigabytes:F2} GB", options.Device, parts.Count, bytesTotal / 1e9);
        var loaded = new List<IDisposable>();

        // Loads one part between two progress reports and a log line with its time.
        T Part<T>(int index, Func<string, T> load)
            where T : IDisposable
        {
            cancellationToken.ThrowIfCancellationRequested();
            (FluxComponent component, string path, long bytes) = parts[index];
            progress?.Report(new FluxLoadProgress(component, path, false, done, parts.Count, bytesDone, bytesTotal, Stopwatch.GetElapsedTime(started)));
            long partStarted = Stopwatch.GetTimestamp();
            T part = load(path);
            loaded.Add(part);
            done++;
            bytesDone += bytes;
            TimeSpan took = Stopwatch.GetElapsedTime(partStarted);
            logger.LogInformation("Loaded {Component} from {Path} in {Milliseconds:F0} ms", component, path, took.TotalMilliseconds);
            progress?.Report(new FluxLoadProgress(component, path, true, done, parts.Count, bytesDone, bytesTotal, Stopwatch.GetElapsedTime(started)));
            return part;
        }

        try
        {
            FluxTransformer transformer = Part(0, path => FluxTransformer.Load(path, options.TransformerWeights, options.Threads, options.Activations, options.Device, options.Loras));
            Autoencoder autoencoder = Part(1, path => Autoencoder.Load(path, options.Threads, options.Device));
            PromptEncoder? encoder = null;
            if (text is not null)
            {
                int t5Length = options.T5MaxLength > 0 ? options.T5MaxLength : transformer.Config.GuidanceEmbed ? 512 : 256;
                ClipTokenizer clipTokenizer = ClipTokenizer.FromDirectory(text.ClipTokenizer);
                T5Tokenizer t5Tokenizer = T5Tokenizer.FromDirectory(text.T5Tokenizer);
                TextEncoder clip = Part(2, path => TextEncoder.Load(path, FluxWeightFormat.AsStored, options.Threads, options.Device, ModelKind.ClipText));
                TextEncoder t5 = Part(3, path => TextEncoder.Load(path, options.T5Weights, options.Threads, options.Device, ModelKind.T5Encoder));
                encoder = new PromptEncoder(clipTokenizer, clip, t5Tokenizer, t5, t5Length, options.PromptCacheSize);
            }

            cancellationToken.ThrowIfCancellationRequested();
            var pipeline = new FluxPipeline(transformer, autoencoder, options, ownsModels: true, encoder, logger);
            logger.LogInformation(
                "FLUX pipeline ready in {Milliseconds:F0} ms: {Variant}, transformer weights {Weights}, {Encoders}",
                Stopwatch.GetElapsedTime(started).TotalMilliseconds, pipeline.Variant, options.TransformerWeights,
                encoder is null ? "no text encoders (requests carry prompt embeddings)" : $"T5 length {encoder.T5MaxLength}");
            return pipeline;
        }
        catch (Exception e)
        {
            // The parts loaded so far are freed; a PromptEncoder that failed to build does not own its encoders.
            foreach (IDisposable part in loaded)
            {
                part.Dispose();
            }

            if (e is OperationCanceledException)
            {
                logger.LogInformation("FLUX pipeline load cancelled after {Parts} of {Total} parts", done, parts.Count);
            }
            else
            {
                logger.LogError(e, "FLUX pipeline load failed after {Parts} of {Total} parts", done, parts.Count);
            }

            throw;
        }
    }

    /// <summary>Bytes of the checkpoint at <paramref name="path"/>: a file's size, or a folder's .safetensors files'.</summary>
    private static long SizeOnDisk(string path)
    {
        try
        {
            if (File.Exists(path))
            {
                return new FileInfo(path).Length;
            }

            return Directory.Exists(path)
                ? new DirectoryInfo(path).EnumerateFiles("*.safetensors", SearchOption.TopDirectoryOnly).Sum(f => f.Length)
                : 0;
        }
        catch (IOException)
        {
            return 0;   // progress by bytes is a nicety; the load itself reports a missing or unreadable file
        }
        catch (UnauthorizedAccessException)
        {
            return 0;
        }
    }

    /// <summary>Logs what the caller should know about an accepted request (its warnings), then its timings when it completes.</summary>
    private Task<GenerationResult> Observe(GenerationPlan plan, Task<GenerationResult> task)
    {
        foreach (string warning in plan.Warnings)
        {
            logger.LogWarning("Generation {Width}x{Height}, seed {Seed}: {Warning}", plan.Width, plan.Height, plan.Seed, warning);
        }

        if (logger.IsEnabled(LogLevel.Information) || logger.IsEnabled(LogLevel.Error))
        {
            task.ContinueWith(LogOutcome, plan, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        return task;
    }

    private void LogOutcome(Task<GenerationResult> task, object? state)
    {
        var plan = (GenerationPlan)state!;
        if (task.IsCompletedSuccessfully)
        {
            GenerationTimings t = task.Result.Timings;
            logger.LogInformation(
                "Generated {Images} image(s) {Width}x{Height}, {Steps} steps, seed {Seed}, in {Total:F0} ms (prepare {Prepare:F0}, of which text {Text:F0}; " +
                "denoise {Denoise:F0} at {StepsPerSecond:F2} it/s; decode {Decode:F0}; encode {Encode:F0}); batch of up to {Batch} image(s)",
                plan.NumImages, plan.Width, plan.Height, t.Steps, plan.Seed, t.Total.TotalMilliseconds, t.Prepare.TotalMilliseconds,
                t.TextEncoding.TotalMilliseconds, t.Denoise.TotalMilliseconds, t.StepsPerSecond, t.Decode.TotalMilliseconds, t.Encode.TotalMilliseconds,
                task.Result.PeakBatchImages);
        }
        else if (task.IsCanceled)
        {
            logger.LogInformation("Generation {Width}x{Height}, seed {Seed} cancelled", plan.Width, plan.Height, plan.Seed);
        }
        else if (task.Exception?.InnerException is { } error)
        {
            logger.LogError(error, "Generation {Width}x{Height}, seed {Seed} failed", plan.Width, plan.Height, plan.Seed);
        }
    }

    /// <summary>
    /// The latent-to-RGB projection for previews, made once per pipeline on the preparing thread the first time a
    /// request asks for previews (see <see cref="LatentPreview.For"/>: a fit to this autoencoder, or the grey mean).
    /// </summary>
    private LatentPreview PreviewProjection(CancellationToken cancellationToken)
    {
        lock (previewGate)
        {
            if (preview is null)
            {
                long started = Stopwatch.GetTimestamp();
                preview = LatentPreview.For(Autoencoder, cancellationToken);
                logger.LogInformation(
                    "Preview projection ready in {Milliseconds:F0} ms: {Method} (RMS error on its colour patches {Error:F1} of 255)",
                    Stopwatch.GetElapsedTime(started).TotalMilliseconds, preview.Method, preview.FitError);
            }

            return preview;
        }
    }
}
