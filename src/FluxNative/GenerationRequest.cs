namespace FluxNative;

/// <summary>
/// Prompt embeddings given by the caller instead of running the text encoders (as diffusers'
/// <c>prompt_embeds</c> / <c>pooled_prompt_embeds</c>): T5 states <c>[B, L, context_dim]</c> and the pooled CLIP
/// vector <c>[B, pooled_dim]</c>, where B is 1 (shared by every image) or the number of images.
/// </summary>
public sealed record PromptEmbeddings(float[] Txt, float[] Pooled, int Batch, int Tokens)
{
    /// <summary>Values per sample of <see cref="Txt"/>.</summary>
    public int ContextDim => Batch > 0 && Tokens > 0 ? Txt.Length / (Batch * Tokens) : 0;

    /// <summary>Values per sample of <see cref="Pooled"/>.</summary>
    public int PooledDim => Batch > 0 ? Pooled.Length / Batch : 0;
}

/// <summary>
/// One text-to-image request, with the knobs of the hosted FLUX APIs. Unset values take the defaults
/// documented on each property; <see cref="FluxPipeline.Plan"/> checks everything and says what is wrong.
/// </summary>
public sealed record GenerationRequest
{
    /// <summary>The prompt. Needs text encoders; without them pass <see cref="PromptEmbeddings"/>.</summary>
    public string? Prompt { get; init; }

    /// <summary>Precomputed prompt embeddings; when set, the prompt text is not encoded.</summary>
    public PromptEmbeddings? PromptEmbeddings { get; init; }

    /// <summary>One of 1:1, 16:9, 21:9, 3:2, 2:3, 4:5, 5:4, 3:4, 4:3, 9:16, 9:21 (default 1:1). Not with <see cref="Width"/>/<see cref="Height"/>.</summary>
    public string? AspectRatio { get; init; }

    /// <summary>The longest side in pixels for <see cref="AspectRatio"/> (default 1024).</summary>
    public int? ImageSize { get; init; }

    /// <summary>Explicit width in pixels (with <see cref="Height"/>); rounded to the nearest multiple of 16.</summary>
    public int? Width { get; init; }

    /// <summary>Explicit height in pixels (with <see cref="Width"/>); rounded to the nearest multiple of 16.</summary>
    public int? Height { get; init; }

    /// <summary>Denoising steps, 1–50 (default 28 for [dev], 4 for [schnell]).</summary>
    public int? Steps { get; init; }

    /// <summary>Distilled guidance, 0–10 (default 3.5); [schnell] ignores it.</summary>
    public double? Guidance { get; init; }

    /// <summary>The seed; null or −1 draws a random one. Image k of the request uses seed + k. The seed used is in the result.</summary>
    public long? Seed { get; init; }

    /// <summary>Images to generate, 1–10 (default 1; OpenAI's n allows 10), run as one batch.</summary>
    public int NumImages { get; init; } = 1;

    /// <summary>Output file format (default PNG).</summary>
    public ImageFormat OutputFormat { get; init; } = ImageFormat.Png;

    /// <summary>JPEG/WebP quality, 1–100 (default 80).</summary>
    public int OutputQuality { get; init; } = 80;

    /// <summary>How pixels become 8-bit values (default: rounding, as diffusers).</summary>
    public PixelRounding Rounding { get; init; } = PixelRounding.Round;

    /// <summary>
    /// Initial latents <c>[NumImages, z, h, w]</c> (FLUX-normalised noise) instead of the seeded noise; h and w are
    /// the image size divided by the autoencoder's downscale (8).
    /// </summary>
    public float[]? InitialLatents { get; init; }

    /// <summary>Return the final latents <c>[NumImages, z, h, w]</c> in the result (before decoding).</summary>
    public bool ReturnLatents { get; init; }

    /// <summary>
    /// Image-to-image: the picture to start from. Without a size in the request the output takes its size (rounded to
    /// multiples of 16, scaled into the pipeline's bounds); with one, the image is resized to it (bilinear, antialiased).
    /// The autoencoder encodes it to its posterior mean (deterministic, as BFL's code).
    /// </summary>
    public RgbImage? Image { get; init; }

    /// <summary>
    /// Image-to-image: how much of <see cref="Image"/> is replaced, in (0, 1] (default 0.8, as Replicate's
    /// <c>prompt_strength</c>): the steps start at t = schedule[⌊(1 − strength)·steps⌋], from
    /// t·noise + (1 − t)·image latents. 1 keeps nothing of the image but its size.
    /// </summary>
    public double? Strength { get; init; }

    /// <summary>
    /// Store the generation parameters (prompt, seed, steps, guidance, size, model) in each image file, as AUTOMATIC1111's
    /// <c>parameters</c> text (default true; see <see cref="GenerationParameters"/> for the text and where each format
    /// keeps it). False writes the pixels only, for images whose prompt must not travel with them.
    /// </summary>
    public bool WriteMetadata { get; init; } = true;

    /// <summary>
    /// Previews while denoising: every this many steps (and after the last), the progress report carries the current
    /// latents projected to RGB (<see cref="GenerationProgress.Previews"/>). 0 (the default) for none. The projection is
    /// cheap (16 multiply-adds a latent pixel); the first request that asks for previews fits it to the autoencoder once
    /// (<see cref="LatentPreview"/>).
    /// </summary>
    public int PreviewEvery { get; init; }

    /// <summary>
    /// How much transformer work may be reused between steps (default <see cref="SpeedMode.Lossless"/>: none). The
    /// measured cost of each mode is in <c>benchmarks/results/speed-modes.md</c>. Weight precision is not part of a
    /// mode: it is chosen at load (<see cref="FluxPipelineOptions"/>).
    /// </summary>
    public SpeedMode SpeedMode { get; init; } = SpeedMode.Lossless;

    /// <summary>For advanced use: step caching set field by field, replacing the caching of <see cref="SpeedMode"/>.</summary>
    public StepCacheOptions? StepCache { get; init; }
}

/// <summary>
/// A request the pipeline cannot run, with the field at fault in the hosted APIs' naming (<c>steps</c>,
/// <c>guidance</c>, <c>aspect_ratio</c>, …). The server answers it with 400 and this message.
/// </summary>
public sealed class GenerationRequestException(string field, string message) : ArgumentException(message, field)
{
    /// <summary>The request field at fault.</summary>
    public string Field { get; } = field;
}

/// <summary>A validated request with every default filled in: what the pipeline will run.</summary>
public sealed record GenerationPlan
{
    /// <summary>Image width in pixels.</summary>
    public required int Width { get; init; }

    /// <summary>Image height in pixels.</summary>
    public required int Height { get; init; }

    /// <summary>Latent width, Width / downscale.</summary>
    public required int LatentWidth { get; init; }

    /// <summary>Latent height, Height / downscale.</summary>
    public required int LatentHeight { get; init; }

    /// <summary>Packed image tokens, (LatentHeight/2)·(LatentWidth/2).</summary>
    public int ImageTokens => LatentHeight / 2 * (LatentWidth / 2);

    /// <summary>Denoising steps of the schedule.</summary>
    public required int Steps { get; init; }

    /// <summary>The schedule step the run starts from: 0, or ⌊(1 − strength)·Steps⌋ for image-to-image.</summary>
    public int StartStep { get; init; }

    /// <summary>Steps that actually run: <see cref="Steps"/> − <see cref="StartStep"/>.</summary>
    public int StepsToRun => Steps - StartStep;

    /// <summary>Image-to-image strength, or null for text-to-image.</summary>
    public double? Strength { get; init; }

    /// <summary>Guidance (used by [dev] only).</summary>
    public required double Guidance { get; init; }

    /// <summary>The seed of image 0 (image k uses Seed + k).</summary>
    public required long Seed { get; init; }

    /// <summary>Images in the batch.</summary>
    public required int NumImages { get; init; }

    /// <summary>Output format.</summary>
    public required ImageFormat Format { get; init; }

    /// <summary>Output quality.</summary>
    public required int Quality { get; init; }

    /// <summary>The speed mode asked for.</summary>
    public SpeedMode SpeedMode { get; init; }

    /// <summary>The step caching that runs (the mode's, or the request's own); null when every step runs every block.</summary>
    public StepCacheOptions? StepCache { get; init; }

    /// <summary>
    /// What the caller should know but that does not stop the run, one sentence each: a side rounded to a multiple of
    /// 16, a size outside FLUX's trained range, a prompt cut at CLIP's 77 tokens or at the T5 length.
    /// </summary>
    public IReadOnlyList<string> Warnings { get; init; } = [];
}
