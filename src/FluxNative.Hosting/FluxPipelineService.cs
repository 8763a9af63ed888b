using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace FluxNative.Hosting;

/// <summary>
/// The host's one <see cref="FluxPipeline"/>: a singleton that the host starts as a hosted service (the load begins
/// then, on a thread of its own, unless <see cref="FluxPipelineHostOptions.WaitForLoadOnStart"/> holds the start-up
/// for it) and disposes at shutdown, after the server has stopped taking requests. Inject it and call
/// <see cref="GenerateAsync"/>, or <see cref="GetPipelineAsync"/> for the pipeline itself.
/// </summary>
/// <remarks>
/// The pipeline is not registered as a service of its own on purpose: handing it out through a factory would block the
/// resolving thread for as long as a 24 GB load takes. Everything that needs it awaits it here instead.
/// </remarks>
public sealed class FluxPipelineService : IHostedService, IAsyncDisposable, IDisposable
{
    private readonly FluxPipelineHostOptions options;
    private readonly ILoggerFactory loggerFactory;
    private readonly ILogger logger;
    private readonly CancellationTokenSource stopping = new();
    private readonly Lock gate = new();
    private Task<FluxPipeline>? load;
    private FluxLoadProgress? lastProgress;
    private bool disposed;

    /// <summary>Made by the container (see <c>AddFluxPipeline</c>).</summary>
    /// <param name="options">What to load.</param>
    /// <param name="loggerFactory">The host's loggers (none when null).</param>
    public FluxPipelineService(IOptions<FluxPipelineHostOptions> options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        this.options = options.Value;
        this.loggerFactory = loggerFactory ?? NullLoggerFactory.Instance;
        logger = this.loggerFactory.CreateLogger<FluxPipelineService>();
    }

    /// <summary>The pipeline once it is loaded, else null.</summary>
    public FluxPipeline? Pipeline => load is { IsCompletedSuccessfully: true } task ? task.Result : null;

    /// <summary>Whether the pipeline is loaded and serving (for a readiness check).</summary>
    public bool IsReady => Pipeline is not null;

    /// <summary>Why the load failed, or null (not failed, or not finished).</summary>
    public Exception? LoadError => load is { IsFaulted: true } task ? task.Exception?.GetBaseException() : null;

    /// <summary>The last load progress report (which part, how far), or null before the load starts.</summary>
    public FluxLoadProgress? LoadProgress => Volatile.Read(ref lastProgress);

    /// <summary>
    /// The pipeline, loading it first if the host has not started the load (a container used without a host).
    /// Completes when the load does; fails as it does.
    /// </summary>
    /// <param name="cancellationToken">Stops this wait, not the load (others may be waiting for it).</param>
    public Task<FluxPipeline> GetPipelineAsync(CancellationToken cancellationToken = default) =>
        StartLoad().WaitAsync(cancellationToken);

    /// <summary>Waits for the pipeline, then runs <see cref="FluxPipeline.GenerateAsync"/>.</summary>
    /// <param name="request">What to generate.</param>
    /// <param name="progress">Told about each step (and carries previews when the request asks for them).</param>
    /// <param name="cancellationToken">Cancels the wait and the generation.</param>
    public async Task<GenerationResult> GenerateAsync(GenerationRequest request, IProgress<GenerationProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        FluxPipeline pipeline = await GetPipelineAsync(cancellationToken).ConfigureAwait(false);
        return await pipeline.GenerateAsync(request, progress, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Starts the load; waits for it only when <see cref="FluxPipelineHostOptions.WaitForLoadOnStart"/>.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        Task<FluxPipeline> started = StartLoad();
        return options.WaitForLoadOnStart ? started.WaitAsync(cancellationToken) : Task.CompletedTask;
    }

    /// <summary>Cancels a load still running (between parts). The pipeline itself is freed in <see cref="DisposeAsync"/>, after the server has drained.</summary>
    public Task StopAsync(CancellationToken cancellationToken)
    {
        stopping.Cancel();
        return Task.CompletedTask;
    }

    /// <summary>Cancels a running load and frees the pipeline (requests still running fail with <see cref="ObjectDisposedException"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        Task<FluxPipeline>? loading;
        lock (gate)
        {
            if (disposed)
            {
                return;
            }

            disposed = true;
            loading = load;
        }

        await stopping.CancelAsync().ConfigureAwait(false);
        if (loading is not null)
        {
            try
            {
                FluxPipeline pipeline = await loading.ConfigureAwait(false);
                await pipeline.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException || loading.IsFaulted)
            {
                // Nothing was loaded, or the load failed (and freed what it had).
            }
        }

        stopping.Dispose();
    }

    /// <summary>
    /// As <see cref="DisposeAsync"/>, for a container disposed synchronously. It blocks until the pipeline's threads have
    /// stopped; the work it waits for runs on threads of its own, so no synchronization context can deadlock it.
    /// </summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private Task<FluxPipeline> StartLoad()
    {
        lock (gate)
        {
            ObjectDisposedException.ThrowIf(disposed, this);
            if (load is not null)
            {
                return load;
            }

            FluxPipelineSources sources;
            FluxPipelineOptions pipelineOptions;
            try
            {
                sources = options.ToSources();
                pipelineOptions = options.ToPipelineOptions();
            }
            catch (Exception e) when (e is GenerationRequestException or IOException or UnauthorizedAccessException)
            {
                logger.LogError(e, "The FluxPipeline settings are not usable");
                return load = Task.FromException<FluxPipeline>(e);
            }

            var progress = new Progress(this);
            return load = FluxPipeline.LoadAsync(sources, pipelineOptions, loggerFactory.CreateLogger<FluxPipeline>(), progress, stopping.Token);
        }
    }

    /// <summary>Keeps the last report, synchronously (Progress&lt;T&gt; would post to a captured context).</summary>
    private sealed class Progress(FluxPipelineService service) : IProgress<FluxLoadProgress>
    {
        public void Report(FluxLoadProgress value) => Volatile.Write(ref service.lastProgress, value);
    }
}
