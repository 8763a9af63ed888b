using System.Diagnostics;
using System.Security.Cryptography;
using FluxNative.Scheduling;

namespace FluxNative;

/// <summary>Where the pipeline's parts come from: a diffusers model folder, per-part overrides, or both.</summary>
public sealed record FluxPipelineSources
{
    /// <summary>
    /// A diffusers-layout folder (<c>model_index.json</c>, <c>transformer/</c>, <c>vae/</c>, <c>text_encoder/</c>,
    /// <c>text_encoder_2/</c>, tokenizers), or an engine file (<see cref="FluxEngine"/>), whose components and tokenizers
    /// serve every part not given on its own.
    /// </summary>
    public string? ModelDirectory { get; init; }

    /// <summary>The transformer: a BFL single file (<c>flux1-dev.safetensors</c>) or a diffusers <c>transformer/</c> folder. Overrides the model folder's.</summary>
    public string? Transformer { get; init; }

    /// <summary>The autoencoder: BFL <c>ae.safetensors</c> or a diffusers <c>vae/</c> folder. Overrides the model folder's.</summary>
    public string? Autoencoder { get; init; }

    /// <summary>The CLIP text encoder folder (diffusers <c>text_encoder/</c>). Overrides the model folder's.</summary>
    public string? Clip { get; init; }

    /// <summary>The T5 encoder folder (diffusers <c>text_encoder_2/</c>). Overrides the model folder's.</summary>
    public string? T5 { get; init; }

    /// <summary>The CLIP tokenizer folder; default: the model folder's <c>tokenizer/</c>, or the one beside <see cref="Clip"/>.</summary>
    public string? ClipTokenizer { get; init; }

    /// <summary>The T5 tokenizer folder; default: the model folder's <c>tokenizer_2/</c>, or the one beside <see cref="T5"/>.</summary>
    public string? T5Tokenizer { get; init; }

    /// <summary>The text side to load, or null when there is none (then requests must carry prompt embeddings).</summary>
    public PromptEncoderSources? ResolvePromptEncoder()
    {
        if (Engine() is { } engine && engine.Component(ModelKind.ClipText) is not null && engine.Component(ModelKind.T5Encoder) is not null)
        {
            // Each encoder not given on its own comes from the engine, with the engine's tokenizer for it.
            (string Clip, string T5)? carried = Clip is null || T5 is null ? FluxEngine.TokenizerFolders(ModelDirectory!, engine) : null;
            return PromptEncoderSources.Resolve(
                null,
                Clip ?? ModelDirectory,
                T5 ?? ModelDirectory,
                ClipTokenizer ?? (Clip is null ? carried?.Clip ?? throw NoTokenizer("clip_tokenizer") : null),
                T5Tokenizer ?? (T5 is null ? carried?.T5 ?? throw NoTokenizer("t5_tokenizer") : null));
        }

        return PromptEncoderSources.Resolve(Engine() is null ? ModelDirectory : null, Clip, T5, ClipTokenizer, T5Tokenizer);
    }

    private GenerationRequestException NoTokenizer(string field) =>
        new(field, $"The engine '{ModelDirectory}' carries no tokenizer files; give the tokenizer folders.");

    // The engine ModelDirectory names; null when it is a folder (or nothing). Read on each call: a record's copy
    // (`with`) may name another file.
    private FluxEngineInfo? Engine() =>
        string.IsNullOrEmpty(ModelDirectory) || Directory.Exists(ModelDirectory) ? null : FluxEngine.TryRead(ModelDirectory);

    /// <summary>The transformer path to load: <see cref="Transformer"/>, else the model folder's <c>transformer/</c>.</summary>
    public string ResolveTransformer() => Resolve(Transformer, "transformer", "--transformer");

    /// <summary>The autoencoder path to load: <see cref="Autoencoder"/>, else the model folder's <c>vae/</c>.</summary>
    public string ResolveAutoencoder() => Resolve(Autoencoder, "vae", "--ae");

    private string Resolve(string? explicitPath, string folder, string option)
    {
        if (!string.IsNullOrEmpty(explicitPath))
        {
            return explicitPath;
        }

        if (string.IsNullOrEmpty(ModelDirectory))
        {
            throw new GenerationRequestException("model", $"No model given: pass a diffusers model folder, or the {folder} itself ({option}).");
        }

        if (Engine() is { } engine)
        {
            ModelKind kind = folder == "transformer" ? ModelKind.FluxTransformer : ModelKind.Autoencoder;
            return engine.Component(kind) is not null
                ? ModelDirectory
                : throw new GenerationRequestException("model", $"The engine '{ModelDirectory}' holds no {folder}; pass it with {option}.");
        }

        if (File.Exists(ModelDirectory))
        {
            throw new GenerationRequestException("model", $"'{ModelDirectory}' is a file but not an engine; pass a model folder, an engine, or the {folder} with {option}.");
        }

        string path = Path.Combine(ModelDirectory, folder);
        if (!Directory.Exists(path))
        {
            throw new GenerationRequestException("model", $"'{ModelDirectory}' has no {folder}/ folder; pass the {folder} with {option}.");
        }

        return path;
    }
}

/// <summary>How a <see cref="FluxPipeline"/> loads and what it accepts.</summary>
public sealed record FluxPipelineOptions
{
    /// <summary>The default <see cref="MinSide"/>: 64 pixels (4 latent patches a side), the smallest diffusers and BFL's code run.</summary>
    public const int DefaultMinSide = 64;

    /// <summary>
    /// The default <see cref="MaxSide"/>: 16384 pixels, a bound that keeps every buffer of a generation addressable,
    /// not one of quality (FLUX was trained on 256–2048; see <see cref="FluxPipeline.TrainedMinSide"/>).
    /// </summary>
    public const int DefaultMaxSide = 16384;

    /// <summary>
    /// The smallest side accepted, in pixels, after rounding to a multiple of 16 (default 64). Sides outside FLUX's
    /// trained range are accepted with a warning in <see cref="GenerationPlan.Warnings"/>; a server narrows the
    /// range with its own policy.
    /// </summary>
    public int MinSide { get; init; } = DefaultMinSide;

    /// <summary>The largest side accepted, in pixels, after rounding to a multiple of 16 (default 16384).</summary>
    public int MaxSide { get; init; } = DefaultMaxSide;

    /// <summary>
    /// The default <see cref="DecodeTile"/>: 128 latent cells (1024 pixels a side), so images up to 1024×1024 decode
    /// whole and larger ones in tiles, within the memory of a 1024×1024 decode.
    /// </summary>
    public const int DefaultDecodeTile = 128;

    /// <summary>
    /// Larger images are decoded in overlapping tiles of this many latent cells a side (0: always whole); see
    /// <see cref="FluxNative.Autoencoder.Decode(ReadOnlySpan{float}, int, int, int, int, int, CancellationToken)"/>.
    /// </summary>
    public int DecodeTile { get; init; } = DefaultDecodeTile;

    /// <summary>The tiles' overlap in latent cells (default 16, 128 pixels), 1 to <see cref="DecodeTile"/>/2.</summary>
    public int DecodeTileOverlap { get; init; } = 16;

    /// <summary>How the transformer holds its linear weights (default: as stored).</summary>
    public FluxWeightFormat TransformerWeights { get; init; } = FluxWeightFormat.AsStored;

    /// <summary>Activation precision of the transformer's linear layers (default exact f32).</summary>
    public FluxActivationPrecision Activations { get; init; } = FluxActivationPrecision.F32;

    /// <summary>Native threads; 0 for the process-wide pool.</summary>
    public int Threads { get; init; }

    /// <summary>Where every component lives and runs (default: the CPU).</summary>
    public FluxDevice Device { get; init; } = FluxDevice.Cpu;

    /// <summary>T5 tokens per prompt; 0 for the variant's (BFL): 512 for [dev], 256 for [schnell].</summary>
    public int T5MaxLength { get; init; }

    /// <summary>How the T5 encoder holds its linear weights (T5-XXL is 9.5 GB in bf16; FP8 halves that).</summary>
    public FluxWeightFormat T5Weights { get; init; } = FluxWeightFormat.AsStored;

    /// <summary>LoRA files merged into the transformer's weights at load (default none); see <see cref="FluxLora"/>.</summary>
    public IReadOnlyList<FluxLora> Loras { get; init; } = [];

    /// <summary>Prompts whose embeddings are kept (least recently used first out); 0 disables the cache.</summary>
    public int PromptCacheSize { get; init; } = 64;

    /// <summary>
    /// The most images that share one transformer forward (default <see cref="FluxPipeline.MaxImages"/>). Concurrent
    /// <see cref="FluxPipeline.GenerateAsync"/> calls of the same size join one batch up to this; 1 runs one request
    /// at a time (a single request with more images still runs them together).
    /// </summary>
    public int MaxBatchImages { get; init; } = FluxPipeline.MaxImages;
}

/// <summary>
/// Text-to-image with FLUX.1: (prompt embeddings, seed) → noise → transformer steps with the flow-matching
/// Euler sampler (docs/flux-model.md §6) → autoencoder → image files.
/// </summary>
/// <remarks>
/// Safe to call from many threads at once: concurrent requests of the same size share each transformer forward
/// (continuous batching: a request joins the running batch at the next step and leaves it when its steps are done),
/// while the next request's prompt is encoded and the last one's images are decoded beside it. Every image is the
/// one the request would get alone, to within float rounding. See <see cref="FluxPipelineOptions.MaxBatchImages"/>.
/// </remarks>
/// <example><code>
/// using var pipeline = FluxPipeline.Load(new FluxPipelineSources { ModelDirectory = "/models/FLUX.1-dev" });
/// GenerationResult result = await pipeline.GenerateAsync(new GenerationRequest { PromptEmbeddings = embeds, Seed = 42 });
/// File.WriteAllBytes("out.png", result.Images[0].Bytes);
/// </code></example>
public sealed partial class FluxPipeline : IDisposable
{
    /// <summary>The aspect ratios the hosted FLUX APIs accept, as (width, height).</summary>
    public static readonly IReadOnlyDictionary<string, (int Width, int Height)> AspectRatios = new Dictionary<string, (int, int)>
    {
        ["1:1"] = (1, 1), ["16:9"] = (16, 9), ["21:9"] = (21, 9), ["3:2"] = (3, 2), ["2:3"] = (2, 3), ["4:5"] = (4, 5),
        ["5:4"] = (5, 4), ["3:4"] = (3, 4), ["4:3"] = (4, 3), ["9:16"] = (9, 16), ["9:21"] = (9, 21),
    };

    /// <summary>Default longest side.</summary>
    public const int DefaultImageSize = 1024;

    /// <summary>Default guidance (BFL's original CLI and diffusers).</summary>
    public const double DefaultGuidance = 3.5;

    /// <summary>Most images per request.</summary>
    public const int MaxImages = 10;

    /// <summary>Longest prompt accepted, in characters (the encoders read 77 and 512 tokens of it).</summary>
    public const int MaxPromptLength = 10_000;

    /// <summary>The smallest side of FLUX's training images; smaller ones run, with a warning (they come out poorer).</summary>
    public const int TrainedMinSide = 256;

    /// <summary>The largest side of FLUX's training images; larger ones run, with a warning (they tend to repeat themselves).</summary>
    public const int TrainedMaxSide = 2048;

    /// <summary>The image-to-image strength when a request gives none (Replicate's <c>prompt_strength</c> default).</summary>
    public const double DefaultStrength = 0.8;

    private readonly bool ownsModels;
    private readonly StepScheduler scheduler;

    /// <summary>Builds a pipeline from loaded models.</summary>
    /// <param name="transformer">The flow transformer.</param>
    /// <param name="autoencoder">The autoencoder; its latent channels must fit the transformer's 2×2 patches.</param>
    /// <param name="options">Size bounds and load settings (defaults when null).</param>
    /// <param name="ownsModels">Dispose the models with the pipeline.</param>
    /// <param name="promptEncoder">The text encoders; without them requests must carry prompt embeddings.</param>
    public FluxPipeline(FluxTransformer transformer, Autoencoder autoencoder, FluxPipelineOptions? options = null, bool ownsModels = true, PromptEncoder? promptEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(autoencoder);
        Options = options ?? new FluxPipelineOptions();
        if (Options.MinSide < 1 || Options.MaxSide < Options.MinSide)
        {
            throw new ArgumentException($"MinSide ({Options.MinSide}) must be at least 1 and at most MaxSide ({Options.MaxSide}).", nameof(options));
        }

        if (Options.MaxBatchImages < 1)
        {
            throw new ArgumentException($"MaxBatchImages must be at least 1 (got {Options.MaxBatchImages}).", nameof(options));
        }

        if (Options.DecodeTile < 0 || (Options.DecodeTile > 0 && (Options.DecodeTileOverlap < 1 || Options.DecodeTileOverlap * 2 > Options.DecodeTile)))
        {
            throw new ArgumentException(
                $"DecodeTile must be 0 (decode whole) or positive with DecodeTileOverlap between 1 and DecodeTile/2 (got {Options.DecodeTile} and {Options.DecodeTileOverlap}).",
                nameof(options));
        }

        if (!autoencoder.Config.HasDecoder)
        {
            throw new ArgumentException("The autoencoder has no decoder.", nameof(autoencoder));
        }

        if (transformer.Config.InChannels != 4 * autoencoder.Config.ZChannels || transformer.Config.OutChannels != transformer.Config.InChannels)
        {
            throw new ArgumentException(
                $"The transformer (in {transformer.Config.InChannels}, out {transformer.Config.OutChannels} channels) does not fit the autoencoder's " +
                $"{autoencoder.Config.ZChannels} latent channels (2×2 patches need in = out = {4 * autoencoder.Config.ZChannels}).", nameof(autoencoder));
        }

        if (promptEncoder is not null &&
            (promptEncoder.T5.Config.HiddenSize != transformer.Config.ContextInDim || promptEncoder.Clip.Config.HiddenSize != transformer.Config.VecInDim))
        {
            throw new ArgumentException(
                $"The text encoders (T5 width {promptEncoder.T5.Config.HiddenSize}, CLIP width {promptEncoder.Clip.Config.HiddenSize}) do not fit the transformer " +
                $"(context {transformer.Config.ContextInDim}, pooled {transformer.Config.VecInDim}).", nameof(promptEncoder));
        }

        Transformer = transformer;
        Autoencoder = autoencoder;
        PromptEncoder = promptEncoder;
        this.ownsModels = ownsModels;
        scheduler = new StepScheduler(transformer, Options.MaxBatchImages, Prepare, Finish);
    }

    /// <summary>Requests accepted by <see cref="GenerateAsync"/> that have not started their steps yet.</summary>
    public int WaitingRequests => scheduler.Waiting;

    /// <summary>Images in the batch the transformer runs now (0 when idle).</summary>
    public int RunningImages => scheduler.ActiveImages;

    /// <summary>Every waiting request is ready to join a batch (for tests that start a known batch).</summary>
    internal bool AllWaitingReady => scheduler.AllWaitingReady;

    /// <summary>The text encoders and their cache, or null (then requests carry prompt embeddings).</summary>
    public PromptEncoder? PromptEncoder { get; }

    /// <summary>The flow transformer.</summary>
    public FluxTransformer Transformer { get; }

    /// <summary>The autoencoder.</summary>
    public Autoencoder Autoencoder { get; }

    /// <summary>What this pipeline accepts and how it loaded.</summary>
    public FluxPipelineOptions Options { get; }

    /// <summary>[dev] (guidance embedder: shifted schedule, guidance used) or [schnell].</summary>
    public FluxVariant Variant => Transformer.Config.GuidanceEmbed ? FluxVariant.Dev : FluxVariant.Schnell;

    /// <summary>Default steps: 28 for [dev], 4 for [schnell].</summary>
    public int DefaultSteps => Variant == FluxVariant.Dev ? 28 : 4;

    /// <summary>Image sides are multiples of this: 2×2 patches of the autoencoder's cells (16 for the published model).</summary>
    public int SizeMultiple => 2 * Autoencoder.Config.Downscale;

    /// <summary>Loads the transformer and the autoencoder.</summary>
    /// <exception cref="GenerationRequestException">No model is given, or a folder lacks a part.</exception>
    /// <exception cref="FluxNativeException">A checkpoint is missing, corrupt or not what it should be.</exception>
    public static FluxPipeline Load(FluxPipelineSources sources, FluxPipelineOptions? options = null) =>
        LoadCore(sources, options, logger: null, progress: null, CancellationToken.None);

    /// <summary>Checks a request and fills in its defaults, without running anything.</summary>
    /// <exception cref="GenerationRequestException">A value is out of range or inconsistent; the message says which and why.</exception>
    public GenerationPlan Plan(GenerationRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        (int width, int height) = ResolveSize(request);
        int steps = request.Steps ?? DefaultSteps;
        if (steps is < 1 or > 50)
        {
            throw new GenerationRequestException("steps", $"steps must be between 1 and 50 (got {steps}).");
        }

        double guidance = request.Guidance ?? DefaultGuidance;
        if (!(guidance >= 0 && guidance <= 10))
        {
            throw new GenerationRequestException("guidance", $"guidance must be between 0 and 10 (got {guidance}).");
        }

        if (request.NumImages is < 1 or > MaxImages)
        {
            throw new GenerationRequestException("num_outputs", $"The number of images must be between 1 and {MaxImages} (got {request.NumImages}).");
        }

        if (!Enum.IsDefined(request.OutputFormat))
        {
            throw new GenerationRequestException("output_format", $"output_format must be png, jpg or webp (got {request.OutputFormat}).");
        }

        if (request.OutputQuality is < 1 or > 100)
        {
            throw new GenerationRequestException("output_quality", $"output_quality must be between 1 and 100 (got {request.OutputQuality}).");
        }

        if (request.PreviewEvery < 0)
        {
            throw new GenerationRequestException("preview_every", $"preview_every must be 0 (no previews) or a number of steps (got {request.PreviewEvery}).");
        }

        if (!Enum.IsDefined(request.Rounding))
        {
            throw new GenerationRequestException("rounding", $"Not a PixelRounding: {request.Rounding}.");
        }

        if (!Enum.IsDefined(request.SpeedMode))
        {
            throw new GenerationRequestException("speed_mode", $"Not a SpeedMode: {request.SpeedMode}.");
        }

        StepCacheOptions? stepCache = request.StepCache ?? StepCacheOptions.For(request.SpeedMode);
        if (stepCache?.Problem() is { } cacheProblem)
        {
            throw new GenerationRequestException(cacheProblem.Field, cacheProblem.Message + ".");
        }

        long seed = request.Seed ?? -1;
        if (seed < -1)
        {
            throw new GenerationRequestException("seed", $"seed must be -1 (random) or a non-negative integer (got {seed}).");
        }

        if (seed > long.MaxValue - MaxImages)
        {
            throw new GenerationRequestException("seed", $"seed must be at most {long.MaxValue - MaxImages} (got {seed}).");
        }

        if (seed == -1)
        {
            seed = RandomNumberGenerator.GetInt32(int.MaxValue);
        }

        (int startStep, double? strength) = ImageToImage(request, steps);
        int downscale = Autoencoder.Config.Downscale;
        var warnings = new List<string>();
        SizeWarnings(request, width, height, warnings);
        if (request.Image is { } image && (image.Width != width || image.Height != height))
        {
            warnings.Add($"The input image ({image.Width}x{image.Height}) is resized to {width}x{height}.");
        }

        if (request.PromptEmbeddings is null && request.Prompt is not null && PromptEncoder is not null)
        {
            warnings.AddRange(PromptEncoder.TruncationWarnings(request.Prompt));
        }

        var plan = new GenerationPlan
        {
            Width = width,
            Height = height,
            LatentWidth = width / downscale,
            LatentHeight = height / downscale,
            Steps = steps,
            StartStep = startStep,
            Strength = strength,
            Guidance = guidance,
            Seed = seed,
            NumImages = request.NumImages,
            Format = request.OutputFormat,
            Quality = request.OutputQuality,
            SpeedMode = request.SpeedMode,
            StepCache = stepCache is { Threshold: > 0 } || request.StepCache is not null ? stepCache : null,
            Warnings = warnings,
        };
        CheckEmbeddings(request, plan);
        CheckLatents(request, plan);
        return plan;
    }

    /// <summary>
    /// Queues <paramref name="request"/> and returns at once; the pipeline's own threads run it, batched with the
    /// other requests of the same size that are running or waiting. The request is checked before this returns
    /// (a bad one throws <see cref="GenerationRequestException"/> here, not in the task).
    /// </summary>
    /// <param name="request">What to generate.</param>
    /// <param name="progress">
    /// Told when the request's first step starts (<see cref="GenerationStage.Preparing"/>), after every denoising step,
    /// and at every stage change; called on a pipeline thread, so it should return quickly.
    /// </param>
    /// <param name="cancellationToken">
    /// Cancels this request only: its task is cancelled at once, and it leaves the batch at the next step boundary
    /// (the running forward stops inside its kernels when no other request shares it; so do a running decode and
    /// prompt encode).
    /// </param>
    /// <exception cref="GenerationRequestException">The request is invalid.</exception>
    /// <exception cref="ObjectDisposedException">The pipeline is disposed (also the task's fault when it is disposed meanwhile).</exception>
    public Task<GenerationResult> GenerateAsync(
        GenerationRequest request,
        IProgress<GenerationProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        GenerationPlan plan = Plan(request);
        return Observe(plan, scheduler.Submit(new GenerationJob(request, plan, progress, cancellationToken)));
    }

    /// <summary>Stops the pipeline's threads (requests still running fail with <see cref="ObjectDisposedException"/>), then frees the models (when the pipeline owns them).</summary>
    public void Dispose()
    {
        scheduler.Dispose();
        if (ownsModels)
        {
            Transformer.Dispose();
            Autoencoder.Dispose();
            PromptEncoder?.Dispose();
        }
    }

    /// <summary>
    /// The start of a request, on the scheduler's preparing thread: its prompt encoded (unless given), its noise drawn
    /// (or the caller's latents), its schedule, and for image-to-image the input image encoded and mixed in at the
    /// starting timestep (docs/flux-model.md §6.3).
    /// </summary>
    private void Prepare(GenerationJob job, CancellationToken cancellationToken)
    {
        GenerationRequest request = job.Request;
        GenerationPlan plan = job.Plan;
        PromptEmbeddings? embeddings = request.PromptEmbeddings;
        TimeSpan textEncoding = TimeSpan.Zero;
        if (embeddings is null)
        {
            long started = Stopwatch.GetTimestamp();
            embeddings = PromptEncoder!.Encode(request.Prompt!, cancellationToken, out TimeSpan tokenization);
            textEncoding = Stopwatch.GetElapsedTime(started);
            job.Tokenization = tokenization;
        }

        int n = plan.NumImages, z = Autoencoder.Config.ZChannels, h = plan.LatentHeight, w = plan.LatentWidth;
        float[] latents = request.InitialLatents ?? LatentNoise.Generate(plan.Seed, n, z, h, w);
        double[] schedule = FluxSchedule.Timesteps(plan.Steps, plan.ImageTokens, shift: Variant == FluxVariant.Dev);
        if (request.Image is { } image)
        {
            RgbImage sized = ImageResize.Resize(image, plan.Width, plan.Height);
            float[] start = Autoencoder.Encode(Images.FromRgb8(sized.Rgb, plan.Width, plan.Height), 1, plan.Height, plan.Width, cancellationToken);
            latents = MixImage(latents, start, schedule[plan.StartStep]);
        }

        job.Preview = request.PreviewEvery > 0 ? PreviewProjection(cancellationToken) : null;
        job.Start(embeddings, textEncoding, Latents.Pack(latents, n, z, h, w), schedule, plan.StartStep);
    }

    /// <summary>x = t·noise + (1 − t)·image latents for every image of the request (a new array: the caller's latents stay as given).</summary>
    private static float[] MixImage(float[] noise, float[] image, double t)
    {
        var mixed = new float[noise.Length];
        for (int i = 0; i < noise.Length; i++)
        {
            mixed[i] = (float)((t * noise[i]) + ((1 - t) * image[i % image.Length]));
        }

        return mixed;
    }

    /// <summary>The end of a request, on the scheduler's finishing thread: its latents decoded, one image at a time, and encoded.</summary>
    private GenerationResult Finish(GenerationJob job, CancellationToken cancellationToken)
    {
        GenerationRequest request = job.Request;
        GenerationPlan plan = job.Plan;
        int n = plan.NumImages, z = Autoencoder.Config.ZChannels, h = plan.LatentHeight, w = plan.LatentWidth;
        TimeSpan admitted = job.Admitted ?? job.DenoisedAt, denoised = job.DenoisedAt;
        job.ReportStage(GenerationStage.Decoding);
        float[] final = Latents.Unpack(job.Latents, n, z, h, w);
        int perLatent = z * h * w;
        var pixels = new float[n][];
        for (int k = 0; k < n; k++)
        {
            // One image at a time: the decoder's activations at full resolution are the memory peak.
            pixels[k] = Autoencoder.Decode(final.AsSpan(k * perLatent, perLatent), 1, h, w, Options.DecodeTile, Options.DecodeTileOverlap, cancellationToken);
        }

        TimeSpan decoded = job.Elapsed;
        job.ReportStage(GenerationStage.Encoding);
        var images = new GeneratedImage[n];
        for (int k = 0; k < n; k++)
        {
            // The decoder stops inside its kernels when the token fires; an image's file encoding (about a second at
            // 2 megapixels for PNG or WebP) cannot be interrupted, so it is not started for a cancelled request.
            cancellationToken.ThrowIfCancellationRequested();
            byte[] rgb = Images.ToRgb8(pixels[k], plan.Width, plan.Height, request.Rounding);
            cancellationToken.ThrowIfCancellationRequested();
            byte[] file = Images.Encode(rgb, plan.Width, plan.Height, plan.Format, plan.Quality, GenerationParameters.For(this, request, plan, k));
            images[k] = new GeneratedImage(file, plan.Format, plan.Width, plan.Height, request.InitialLatents is null ? plan.Seed + k : null) { Rgb = rgb };
        }

        TimeSpan total = job.Elapsed;
        return new GenerationResult
        {
            Images = images,
            Plan = plan,
            Timings = new GenerationTimings(admitted, denoised - admitted, decoded - denoised, total - decoded, total, plan.StepsToRun)
            {
                TextEncoding = job.TextEncoding,
                Tokenization = job.Tokenization,
            },
            FinalLatents = request.ReturnLatents ? final : null,
            PeakBatchImages = job.PeakBatchImages,
            BlocksComputed = job.BlocksComputed,
            BlocksTotal = job.BlocksTotal,
            CachedSteps = job.CachedSteps,
        };
    }

    private (int Width, int Height) ResolveSize(GenerationRequest request)
    {
        int multiple = SizeMultiple;
        int width, height;
        if (request.Width is not null || request.Height is not null)
        {
            if (request.Width is null || request.Height is null)
            {
                throw new GenerationRequestException(request.Width is null ? "width" : "height", "Give both width and height, or neither (and an aspect_ratio).");
            }

            if (request.AspectRatio is not null || request.ImageSize is not null)
            {
                throw new GenerationRequestException("aspect_ratio", "Give either width and height, or aspect_ratio and image_size, not both.");
            }

            width = RoundToMultiple(request.Width.Value, multiple);
            height = RoundToMultiple(request.Height.Value, multiple);
        }
        else if (request.Image is { } image && request.AspectRatio is null && request.ImageSize is null)
        {
            (width, height) = FitImage(image.Width, image.Height, multiple);
        }
        else
        {
            string ratio = request.AspectRatio ?? "1:1";
            if (!AspectRatios.TryGetValue(ratio.Trim(), out (int Width, int Height) parts))
            {
                throw new GenerationRequestException("aspect_ratio", $"aspect_ratio must be one of {string.Join(", ", AspectRatios.Keys)} (got '{ratio}').");
            }

            int longest = request.ImageSize ?? DefaultImageSize;
            if (longest < Options.MinSide || longest > Options.MaxSide)
            {
                throw new GenerationRequestException("image_size", $"image_size must be between {Options.MinSide} and {Options.MaxSide} (got {longest}).");
            }

            double scale = (double)longest / Math.Max(parts.Width, parts.Height);
            width = RoundToMultiple(parts.Width * scale, multiple);
            height = RoundToMultiple(parts.Height * scale, multiple);
        }

        foreach ((string field, int value) in new[] { ("width", width), ("height", height) })
        {
            if (value < Options.MinSide || value > Options.MaxSide)
            {
                throw new GenerationRequestException(field,
                    $"The image {field} must be between {Options.MinSide} and {Options.MaxSide} pixels after rounding to a multiple of {multiple} (it is {value}).");
            }
        }

        return (width, height);
    }

    /// <summary>
    /// The output size an input image gives: its own, rounded to the multiple, scaled down (aspect kept) when a side
    /// is over <see cref="FluxPipelineOptions.MaxSide"/> and up when one is under <see cref="FluxPipelineOptions.MinSide"/>.
    /// </summary>
    private (int Width, int Height) FitImage(int imageWidth, int imageHeight, int multiple)
    {
        if (imageWidth < 1 || imageHeight < 1)
        {
            throw new GenerationRequestException("image", $"The input image is {imageWidth}x{imageHeight}; it needs at least one pixel a side.");
        }

        double scale = Math.Min(1.0, (double)Options.MaxSide / Math.Max(imageWidth, imageHeight));
        scale = Math.Max(scale, (double)Options.MinSide / Math.Min(imageWidth, imageHeight));
        int width = Math.Clamp(RoundToMultiple(imageWidth * scale, multiple), Options.MinSide, Options.MaxSide);
        int height = Math.Clamp(RoundToMultiple(imageHeight * scale, multiple), Options.MinSide, Options.MaxSide);
        return (width, height);
    }

    /// <summary>Where an image-to-image run starts: ⌊(1 − strength)·steps⌋ (BFL's), or 0 and null without an image.</summary>
    private (int StartStep, double? Strength) ImageToImage(GenerationRequest request, int steps)
    {
        if (request.Image is null)
        {
            if (request.Strength is not null)
            {
                throw new GenerationRequestException("strength", "strength applies to image-to-image; give an input image with it.");
            }

            return (0, null);
        }

        if (!Autoencoder.Config.HasEncoder)
        {
            throw new GenerationRequestException("image", "This autoencoder has no encoder (a decoder-only file), so it cannot take an input image.");
        }

        RgbImage image = request.Image;
        if (image.Width < 1 || image.Height < 1 || image.Rgb is null || image.Rgb.Length != 3L * image.Width * image.Height)
        {
            throw new GenerationRequestException("image", $"The input image is not {image.Width}x{image.Height} RGB pixels ({image.Rgb?.Length ?? 0} bytes).");
        }

        double strength = request.Strength ?? DefaultStrength;
        if (!(strength > 0 && strength <= 1))
        {
            throw new GenerationRequestException("strength", $"strength must be greater than 0 and at most 1 (got {strength}).");
        }

        // Floating point may put (1 − s)·N a hair under an integer it equals exactly (0.3·10 = 2.9999…).
        int start = (int)Math.Floor(((1 - strength) * steps) + 1e-9);
        return (Math.Min(start, steps - 1), strength);   // at least one step runs
    }

    /// <summary>What a caller should know about the size: a side rounded to the multiple, a side outside the trained range.</summary>
    private void SizeWarnings(GenerationRequest request, int width, int height, List<string> warnings)
    {
        foreach ((string field, int? asked, int used) in new[] { ("width", request.Width, width), ("height", request.Height, height) })
        {
            if (asked is int value && value != used)
            {
                warnings.Add($"The {field} {value} is not a multiple of {SizeMultiple}; using {used}.");
            }
        }

        if (width < TrainedMinSide || height < TrainedMinSide || width > TrainedMaxSide || height > TrainedMaxSide)
        {
            warnings.Add($"{width}x{height} is outside FLUX's trained range ({TrainedMinSide}-{TrainedMaxSide} pixels a side); expect poorer images.");
        }
    }

    private static int RoundToMultiple(double value, int multiple) =>
        Math.Max(multiple, (int)Math.Round(value / multiple, MidpointRounding.AwayFromZero) * multiple);

    private void CheckEmbeddings(GenerationRequest request, GenerationPlan plan)
    {
        PromptEmbeddings? e = request.PromptEmbeddings;
        if (e is null)
        {
            if (string.IsNullOrWhiteSpace(request.Prompt))
            {
                throw new GenerationRequestException("prompt", "Give a prompt or prompt embeddings.");
            }

            if (PromptEncoder is null)
            {
                throw new GenerationRequestException("prompt",
                    "This pipeline has no text encoders, so it cannot encode a prompt: load it with the CLIP and T5 encoders, or pass prompt embeddings " +
                    $"(T5 states [B, L, {Transformer.Config.ContextInDim}] and the pooled CLIP vector [B, {Transformer.Config.VecInDim}]).");
            }

            if (request.Prompt.Length > MaxPromptLength)
            {
                throw new GenerationRequestException("prompt", $"The prompt has {request.Prompt.Length} characters; at most {MaxPromptLength} are accepted.");
            }

            return;
        }

        if (e.Batch != 1 && e.Batch != plan.NumImages)
        {
            throw new GenerationRequestException("prompt_embeds", $"Prompt embeddings have batch {e.Batch}; it must be 1 or the number of images ({plan.NumImages}).");
        }

        int ctx = Transformer.Config.ContextInDim, vec = Transformer.Config.VecInDim;
        if (e.Tokens < 1 || e.Txt is null || e.Txt.Length != (long)e.Batch * e.Tokens * ctx)
        {
            throw new GenerationRequestException("prompt_embeds", $"txt has {e.Txt?.Length ?? 0} values but [{e.Batch}, {e.Tokens}, {ctx}] needs {(long)e.Batch * e.Tokens * ctx}.");
        }

        if (e.Pooled is null || e.Pooled.Length != (long)e.Batch * vec)
        {
            throw new GenerationRequestException("prompt_embeds", $"y has {e.Pooled?.Length ?? 0} values but [{e.Batch}, {vec}] needs {(long)e.Batch * vec}.");
        }
    }

    private void CheckLatents(GenerationRequest request, GenerationPlan plan)
    {
        if (request.InitialLatents is { } latents)
        {
            long expected = (long)plan.NumImages * Autoencoder.Config.ZChannels * plan.LatentHeight * plan.LatentWidth;
            if (latents.Length != expected)
            {
                throw new GenerationRequestException("latents",
                    $"Initial latents have {latents.Length} values but [{plan.NumImages}, {Autoencoder.Config.ZChannels}, {plan.LatentHeight}, {plan.LatentWidth}] needs {expected}.");
            }
        }
    }
}
