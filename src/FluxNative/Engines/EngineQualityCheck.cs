namespace FluxNative;

/// <summary>What <see cref="EngineQualityCheck.Run"/> compares and what it accepts.</summary>
public sealed record EngineQualityOptions
{
    /// <summary>The prompts the FP8 layers were built for: <c>flux build</c>'s default when none are given.</summary>
    public static readonly IReadOnlyList<string> DefaultPrompts =
    [
        "a photograph of a red fox in fresh snow, morning light",
        "an isometric illustration of a small harbour town at dusk",
        "a close-up portrait of an elderly sailor, oil painting",
        "the word FLUX written in neon letters on a brick wall",
    ];

    /// <summary>The calibration prompts (default <see cref="DefaultPrompts"/>); ignored when the sources have no text encoders (seeded random embeddings are used).</summary>
    public IReadOnlyList<string> Prompts { get; init; } = DefaultPrompts;

    /// <summary>Image side in pixels (default 256).</summary>
    public int Size { get; init; } = 256;

    /// <summary>Denoising steps of the images compared (default 4).</summary>
    public int Steps { get; init; } = 4;

    /// <summary>Largest accepted relative L2 of the transformer's output from the bf16 model's, over all prompts (default 6e-2, the FP8 target).</summary>
    public double MaxRelativeL2 { get; init; } = 6e-2;

    /// <summary>Smallest accepted PSNR of the decoded images against the bf16 model's, in dB, over all prompts (default 25).</summary>
    public double MinPsnrDb { get; init; } = 25;

    /// <summary>Native threads; 0 for the process-wide pool.</summary>
    public int Threads { get; init; }
}

/// <summary>What <see cref="EngineQualityCheck.Run"/> measured.</summary>
/// <param name="RelativeL2">‖engine − reference‖ / ‖reference‖ of the transformer's output, over every prompt and timestep together.</param>
/// <param name="WorstRelativeL2">The largest of the per-prompt values.</param>
/// <param name="PsnrDb">PSNR of the decoded images (8-bit RGB) against the reference's, over all prompts; +∞ when identical.</param>
/// <param name="WorstPsnrDb">The smallest per-prompt PSNR.</param>
/// <param name="Prompts">Prompts compared (or random embeddings, when the sources have no text encoders).</param>
/// <param name="Passed">Both within <see cref="EngineQualityOptions"/>' bounds.</param>
public sealed record EngineQualityResult(double RelativeL2, double WorstRelativeL2, double PsnrDb, double WorstPsnrDb, int Prompts, bool Passed);

/// <summary>
/// <c>flux build</c>'s quality gate: runs an engine against the model it was built from, loaded with bf16 weights, on
/// calibration inputs. Per prompt: the transformer's output on the prompt's embeddings (the reference's, so that only the
/// transformer differs) at t = 1 and t = 0.5 from the same seeded noise, and the decoded image of a short generation with
/// the same seed, each pipeline with its own text encoders. The two pipelines are loaded one after the other, never
/// together, so the check needs the memory of one.
/// </summary>
public static class EngineQualityCheck
{
    private static readonly float[] Timesteps = [1.0f, 0.5f];

    /// <summary>Compares the engine at <paramref name="enginePath"/> with <paramref name="sources"/> in bf16.</summary>
    public static EngineQualityResult Run(FluxPipelineSources sources, string enginePath, EngineQualityOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentException.ThrowIfNullOrEmpty(enginePath);
        options ??= new EngineQualityOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Steps, 1);

        var reference = Measure(sources, new FluxPipelineOptions { TransformerWeights = FluxWeightFormat.Bf16, Threads = options.Threads }, options, null, cancellationToken);
        var engineSources = new FluxPipelineSources
        {
            ModelDirectory = enginePath,
            // The parts the engine lacks come from the sources (an engine built from a transformer alone).
            Autoencoder = FluxEngine.TryRead(enginePath)?.Component(ModelKind.Autoencoder) is null ? sources.ResolveAutoencoder() : null,
        };
        var engine = Measure(engineSources, new FluxPipelineOptions { Threads = options.Threads }, options, reference.Embeddings, cancellationToken);

        double num = 0, den = 0, worstL2 = 0, squared = 0, worstPsnr = double.PositiveInfinity;
        long pixels = 0;
        for (int i = 0; i < reference.Outputs.Count; i++)
        {
            (double n, double d) = Distance(engine.Outputs[i], reference.Outputs[i]);
            num += n;
            den += d;
            worstL2 = Math.Max(worstL2, d > 0 ? Math.Sqrt(n / d) : 0);
        }

        for (int i = 0; i < reference.Images.Count; i++)
        {
            ReadOnlySpan<byte> a = engine.Images[i].Span, b = reference.Images[i].Span;
            double sum = 0;
            for (int k = 0; k < b.Length; k++)
            {
                double diff = a[k] - b[k];
                sum += diff * diff;
            }

            squared += sum;
            pixels += b.Length;
            worstPsnr = Math.Min(worstPsnr, Psnr(sum / b.Length));
        }

        double relativeL2 = den > 0 ? Math.Sqrt(num / den) : 0, psnr = Psnr(squared / Math.Max(1, pixels));
        bool passed = relativeL2 <= options.MaxRelativeL2 && worstPsnr >= options.MinPsnrDb;
        return new EngineQualityResult(relativeL2, worstL2, psnr, worstPsnr, reference.Images.Count, passed);
    }

    private static double Psnr(double meanSquaredError) =>
        meanSquaredError <= 0 ? double.PositiveInfinity : 10 * Math.Log10(255.0 * 255.0 / meanSquaredError);

    private static (double Num, double Den) Distance(float[] got, float[] want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            if (!float.IsFinite(got[i]))
            {
                return (double.PositiveInfinity, 1);
            }

            double d = (double)got[i] - want[i];
            num += d * d;
            den += (double)want[i] * want[i];
        }

        return (num, den);
    }

    private sealed record Measurement(List<PromptEmbeddings> Embeddings, List<float[]> Outputs, List<ReadOnlyMemory<byte>> Images);

    // One pipeline's transformer outputs and images. `embeddings`: the reference's, reused so that the transformer
    // outputs compare the transformers only; null for the reference, which makes them.
    private static Measurement Measure(
        FluxPipelineSources sources, FluxPipelineOptions pipelineOptions, EngineQualityOptions options, List<PromptEmbeddings>? embeddings, CancellationToken cancellationToken)
    {
        using FluxPipeline pipeline = FluxPipeline.Load(sources, pipelineOptions);
        FluxTransformerConfig config = pipeline.Transformer.Config;
        int side = options.Size / pipeline.SizeMultiple * pipeline.SizeMultiple;
        int latentSide = side / pipeline.Autoencoder.Config.Downscale, channels = config.InChannels / 4;
        bool prompts = pipeline.PromptEncoder is not null;
        int count = prompts ? options.Prompts.Count : 2;
        var made = new List<PromptEmbeddings>();
        var outputs = new List<float[]>();
        var images = new List<ReadOnlyMemory<byte>>();
        for (int p = 0; p < count; p++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            PromptEmbeddings own = prompts
                ? pipeline.PromptEncoder!.Encode(options.Prompts[p], cancellationToken)
                : RandomEmbeddings(config, seed: 1000 + p);
            made.Add(own);
            PromptEmbeddings forTransformer = embeddings?[p] ?? own;
            float[] noise = Latents.Pack(LatentNoise.Generate(p, 1, channels, latentSide, latentSide), 1, channels, latentSide, latentSide);
            int imageTokens = noise.Length / config.InChannels;
            foreach (float t in Timesteps)
            {
                outputs.Add(pipeline.Transformer.Forward(new FluxForwardInputs
                {
                    Batch = 1,
                    ImageTokens = imageTokens,
                    TextTokens = forTransformer.Tokens,
                    Img = noise,
                    ImgIds = Latents.ImageIds(1, latentSide, latentSide),
                    Txt = forTransformer.Txt,
                    TxtIds = Latents.TextIds(1, forTransformer.Tokens),
                    Y = forTransformer.Pooled,
                    Timesteps = new[] { t },
                    Guidance = config.GuidanceEmbed ? new[] { 3.5f } : ReadOnlyMemory<float>.Empty,
                }, cancellationToken));
            }

            GenerationResult result = pipeline.GenerateAsync(
                new GenerationRequest { PromptEmbeddings = own, Width = side, Height = side, Steps = options.Steps, Seed = p, WriteMetadata = false },
                cancellationToken: cancellationToken).GetAwaiter().GetResult();
            images.Add(result.Images[0].Rgb);
        }

        return new Measurement(made, outputs, images);
    }

    private static PromptEmbeddings RandomEmbeddings(FluxTransformerConfig config, int seed)
    {
        var random = new Random(seed);
        const int tokens = 16;
        float[] txt = new float[tokens * config.ContextInDim], y = new float[config.VecInDim];
        for (int i = 0; i < txt.Length; i++)
        {
            txt[i] = (float)(random.NextDouble() * 2 - 1);
        }

        for (int i = 0; i < y.Length; i++)
        {
            y[i] = (float)(random.NextDouble() * 2 - 1);
        }

        return new PromptEmbeddings(txt, y, 1, tokens);
    }
}
