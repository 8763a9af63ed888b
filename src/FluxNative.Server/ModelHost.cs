using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace FluxNative.Server;

/// <summary>
/// The one pipeline of the server: loaded in the background when the host starts (<c>/readyz</c> says when it is
/// ready), and the place where an API request becomes a checked <see cref="GenerationRequest"/>.
/// </summary>
internal sealed class ModelHost(FluxServerOptions options, ILogger<ModelHost> logger) : BackgroundService
{
    private readonly TaskCompletionSource<FluxPipeline> loaded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile FluxPipeline? pipeline;
    private volatile string? loadError;

    public bool Demo => options.Demo;

    public bool IsReady => pipeline is not null;

    public string? LoadError => loadError;

    /// <summary>A one-line description of the loaded model, or null before it is loaded.</summary>
    public string? Description => pipeline is { } p
        ? $"{p.Transformer.Config.Summary}{(options.Demo ? " (demo: tiny random models)" : string.Empty)}"
        : null;

    public FluxPipeline Pipeline => pipeline ?? throw NotReady();

    /// <summary>Waits until the model is loaded (or its load failed, which throws).</summary>
    public Task<FluxPipeline> WaitReadyAsync(CancellationToken cancellationToken = default) => loaded.Task.WaitAsync(cancellationToken);

    /// <summary>Turns a spec into a request the pipeline accepts, checked by <see cref="FluxPipeline.Plan"/>; a bad value is a 400.</summary>
    public (GenerationRequest Request, GenerationPlan Plan) Prepare(GenerationSpec spec)
    {
        FluxPipeline p = Pipeline;
        bool sized = spec.Width is not null || spec.Height is not null || spec.ImageSize is not null;
        var request = new GenerationRequest
        {
            Prompt = spec.Prompt,
            // With text encoders the pipeline encodes the prompt itself (in the worker, cached); the demo's tiny
            // models have none here, so it uses random embeddings derived from the prompt.
            PromptEmbeddings = options.Demo && p.PromptEncoder is null ? DemoModels.RandomEmbeddings(p.Transformer.Config, PromptSeed(spec.Prompt)) : null,
            AspectRatio = spec.AspectRatio,
            ImageSize = spec.ImageSize ?? (options.Demo && !sized && spec.Image is null ? DemoModels.DefaultImageSize : null),
            Width = spec.Width,
            Height = spec.Height,
            Steps = spec.Steps,
            Guidance = spec.Guidance,
            Seed = spec.Seed,
            NumImages = spec.NumImages,
            OutputFormat = spec.Format,
            OutputQuality = spec.Quality,
            Image = spec.Image,
            Strength = spec.Strength,
            SpeedMode = spec.SpeedMode,
        };

        GenerationPlan plan;
        try
        {
            plan = p.Plan(request);
        }
        catch (GenerationRequestException e)
        {
            string field = spec.FieldNames.TryGetValue(e.Field, out string? name) ? name : e.Field;
            string message = e.Field == "prompt" && request.PromptEmbeddings is null && p.PromptEncoder is null
                ? "This server's model has no text encoders, so it cannot encode prompts: start it with --model pointing at a " +
                  "diffusers folder with text_encoder/ and text_encoder_2/, or with --clip and --t5 (or --demo to try the API)."
                : e.Message;
            throw ApiException.BadRequest(message, field);
        }

        // The seed the plan drew is the seed that runs (and that the logs and metrics report).
        return (request with { Seed = plan.Seed }, plan);
    }

    /// <summary>A stable 63-bit hash of the prompt (SHA-256), the seed of the demo's random prompt embeddings.</summary>
    public static long PromptSeed(string prompt)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(prompt), hash);
        return BitConverter.ToInt64(hash) & long.MaxValue;
    }

    public override void Dispose()
    {
        pipeline?.Dispose();
        base.Dispose();
    }

    // The load cannot be interrupted (it is native), so it does not take the token: a host that stops at once
    // (a port in use) would otherwise see a cancelled task it reports as a failed service.
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => Task.Run(() =>
    {
        try
        {
            FluxPipelineSources sources;
            FluxPipelineOptions pipelineOptions;
            if (options.Demo)
            {
                sources = WriteDemoModels(options.DemoDirectory ?? Path.Combine(Path.GetTempPath(), "fluxnative-demo"));
                pipelineOptions = options.Pipeline ?? DemoModels.Options;
            }
            else
            {
                sources = options.Model ?? throw new FluxServerConfigurationException("No model: pass --model, or --transformer and --ae, or --demo.");
                pipelineOptions = options.Pipeline ?? new FluxPipelineOptions();
            }

            // The server's size policy is the pipeline's bounds: a request outside it is a 400 naming the field.
            // The batching limit is the server's too: the pipeline batches the predictions it is given.
            pipelineOptions = pipelineOptions with
            {
                MinSide = options.EffectiveMinImageSide, MaxSide = options.MaxImageSide, MaxBatchImages = options.MaxBatchImages,
            };
            logger.LogInformation("Loading the model ({Transformer}, {Autoencoder})", sources.ResolveTransformer(), sources.ResolveAutoencoder());
            FluxPipeline p = FluxPipeline.Load(sources, pipelineOptions);
            pipeline = p;
            logger.LogInformation("Model ready: {Model}", Description);
            loaded.TrySetResult(p);
        }
        catch (Exception e)
        {
            loadError = e.Message;
            if (e is ArgumentException or FluxNativeException or IOException or UnauthorizedAccessException or InvalidDataException or FluxServerConfigurationException)
            {
                // A path or a file at fault: the message says which; a stack trace would bury it.
                logger.LogError("The model failed to load: {Message}", e.Message);
            }
            else
            {
                logger.LogError(e, "The model failed to load: {Message}", e.Message);
            }

            loaded.TrySetException(e);
        }
    }, CancellationToken.None);

    private ApiException NotReady() => loadError is null
        ? new ApiException(StatusCodes.Status503ServiceUnavailable, "The model is still loading; try again shortly.") { RetryAfterSeconds = 5 }
        : new ApiException(StatusCodes.Status503ServiceUnavailable, $"The model failed to load: {loadError}");

    /// <summary>
    /// Writes the demo models once into <paramref name="directory"/>: into a private folder first, then moved into place,
    /// so that two processes starting at once never read a half-written file.
    /// </summary>
    internal static FluxPipelineSources WriteDemoModels(string directory)
    {
        // DemoModels.Write's file names: when both are there, nothing is written.
        var existing = new FluxPipelineSources
        {
            Transformer = Path.Combine(directory, "flux-tiny-dev.safetensors"),
            Autoencoder = Path.Combine(directory, "ae-tiny.safetensors"),
        };
        if (File.Exists(existing.Transformer) && File.Exists(existing.Autoencoder))
        {
            return existing;
        }

        Directory.CreateDirectory(directory);
        string scratch = Path.Combine(directory, $".writing-{Guid.NewGuid():N}");
        FluxPipelineSources written = DemoModels.Write(scratch);
        try
        {
            string transformer = Path.Combine(directory, Path.GetFileName(written.Transformer!));
            string autoencoder = Path.Combine(directory, Path.GetFileName(written.Autoencoder!));
            foreach ((string from, string to) in new[] { (written.Transformer!, transformer), (written.Autoencoder!, autoencoder) })
            {
                if (!File.Exists(to))
                {
                    try
                    {
                        File.Move(from, to, overwrite: false);
                    }
                    catch (IOException) when (File.Exists(to))
                    {
                        // Another process moved its copy in first: the same bytes.
                    }
                }
            }

            return new FluxPipelineSources { Transformer = transformer, Autoencoder = autoencoder };
        }
        finally
        {
            try
            {
                Directory.Delete(scratch, recursive: true);
            }
            catch (IOException)
            {
                // Only a leftover scratch folder.
            }
        }
    }
}
