namespace FluxNative;

/// <summary>What a generation reports while it runs.</summary>
public enum GenerationStage
{
    /// <summary>Validating, drawing noise, encoding the prompt.</summary>
    Preparing,

    /// <summary>The transformer steps.</summary>
    Denoising,

    /// <summary>The autoencoder turns latents into pixels.</summary>
    Decoding,

    /// <summary>Writing the image files.</summary>
    Encoding,
}

/// <summary>Progress of one generation: after every denoising step, and at each stage change.</summary>
/// <param name="Stage">The stage now running.</param>
/// <param name="Step">Denoising steps done (0 before the first).</param>
/// <param name="TotalSteps">Denoising steps in all.</param>
/// <param name="Elapsed">Time since the generation started.</param>
/// <param name="StepsPerSecond">Denoising steps per second so far (0 before the first).</param>
public sealed record GenerationProgress(GenerationStage Stage, int Step, int TotalSteps, TimeSpan Elapsed, double StepsPerSecond)
{
    /// <summary>
    /// When the request asked for previews (<see cref="GenerationRequest.PreviewEvery"/>) and this is a step that has
    /// one: the current latents of each image projected to RGB at the latent resolution (an eighth of the image side),
    /// cheaply and roughly (see <see cref="LatentPreview"/>). Null otherwise.
    /// </summary>
    public IReadOnlyList<RgbImage>? Previews { get; init; }
}

/// <summary>One generated image: the encoded file and how it was made.</summary>
/// <param name="Bytes">The image file (PNG, JPEG or WebP).</param>
/// <param name="Format">Its format.</param>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
/// <param name="Seed">The seed of this image's noise (request seed + index); null when the caller passed the latents.</param>
public sealed record GeneratedImage(byte[] Bytes, ImageFormat Format, int Width, int Height, long? Seed)
{
    /// <summary>
    /// The raw pixels the file was encoded from: interleaved 8-bit RGB, <c>[Height, Width, 3]</c>, rows top to bottom
    /// (for a host that draws or re-encodes them itself). Empty only for an image built without them.
    /// </summary>
    public ReadOnlyMemory<byte> Rgb { get; init; }
}

/// <summary>Wall-clock time per stage of one generation, from the moment it was queued.</summary>
/// <param name="Prepare">Until its first step: waiting for the pipeline, encoding the prompt, drawing the noise.</param>
/// <param name="Denoise">Its transformer steps (shared with the requests batched with it).</param>
/// <param name="Decode">The autoencoder.</param>
/// <param name="Encode">Writing the image files.</param>
/// <param name="Total">All of it.</param>
/// <param name="Steps">Denoising steps.</param>
public sealed record GenerationTimings(TimeSpan Prepare, TimeSpan Denoise, TimeSpan Decode, TimeSpan Encode, TimeSpan Total, int Steps)
{
    /// <summary>The part of <see cref="Prepare"/> spent in the text encoders (zero for a cached prompt or given embeddings).</summary>
    public TimeSpan TextEncoding { get; init; }

    /// <summary>The part of <see cref="TextEncoding"/> spent in the CLIP and T5 tokenizers.</summary>
    public TimeSpan Tokenization { get; init; }

    /// <summary>Denoising steps per second.</summary>
    public double StepsPerSecond => Denoise > TimeSpan.Zero ? Steps / Denoise.TotalSeconds : 0;
}

/// <summary>The result of <see cref="FluxPipeline.GenerateAsync"/>.</summary>
public sealed record GenerationResult
{
    /// <summary>The images, in batch order.</summary>
    public required IReadOnlyList<GeneratedImage> Images { get; init; }

    /// <summary>What ran: size, steps, guidance, seed.</summary>
    public required GenerationPlan Plan { get; init; }

    /// <summary>Time per stage.</summary>
    public required GenerationTimings Timings { get; init; }

    /// <summary>The final latents <c>[N, z, h, w]</c> when the request asked for them.</summary>
    public float[]? FinalLatents { get; init; }

    /// <summary>The most images in one transformer forward this request took part in (its own and other requests' batched with it).</summary>
    public int PeakBatchImages { get; init; }

    /// <summary>Transformer blocks this request's images ran, over all its steps (step caching skips some).</summary>
    public long BlocksComputed { get; init; }

    /// <summary>Transformer blocks its steps would run without step caching: images × steps × blocks.</summary>
    public long BlocksTotal { get; init; }

    /// <summary>The share of <see cref="BlocksTotal"/> that ran: 1 without step caching.</summary>
    public double BlocksComputedShare => BlocksTotal > 0 ? (double)BlocksComputed / BlocksTotal : 1;

    /// <summary>Image-steps (of images × steps) that reused the cached middle blocks instead of running them.</summary>
    public int CachedSteps { get; init; }
}
