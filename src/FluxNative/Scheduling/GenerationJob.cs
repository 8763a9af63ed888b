using System.Diagnostics;

namespace FluxNative.Scheduling;

/// <summary>
/// One request inside the <see cref="StepScheduler"/>: its checked plan, its text embeddings once encoded, its own
/// latents, schedule and step counter (so it can share a transformer forward with requests at other steps), and
/// the task its caller awaits. Its images move together: they join a batch together and leave it together.
/// </summary>
internal sealed class GenerationJob
{
    private readonly Stopwatch clock = Stopwatch.StartNew();
    private bool started;

    public GenerationJob(GenerationRequest request, GenerationPlan plan, IProgress<GenerationProgress>? progress, CancellationToken cancellationToken)
    {
        Request = request;
        Plan = plan;
        Progress = progress;
        CancellationToken = cancellationToken;
        Embeddings = request.PromptEmbeddings;
    }

    public GenerationRequest Request { get; }

    public GenerationPlan Plan { get; }

    public IProgress<GenerationProgress>? Progress { get; }

    /// <summary>The caller's token: cancels this request only, never the others it shares a batch with.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>What the caller awaits. Continuations run on the thread pool, never on a scheduler thread.</summary>
    public TaskCompletionSource<GenerationResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Cancelled, failed or done: the scheduler drops it at the next step boundary.</summary>
    public bool IsOver => Completion.Task.IsCompleted;

    public CancellationTokenRegistration Registration { get; set; }

    /// <summary>The prompt embeddings (given, or set by the encoding stage); null until the text is encoded.</summary>
    public PromptEmbeddings? Embeddings { get; private set; }

    /// <summary>Ready to join a batch: <see cref="Start"/> was called.</summary>
    public bool IsReady { get; private set; }

    /// <summary>T5 tokens per image: requests join one batch only with the same count (and the same size).</summary>
    public int TextTokens => Embeddings?.Tokens ?? 0;

    /// <summary>Packed latents <c>[NumImages, ImageTokens, 4z]</c>, advanced in place by each Euler step.</summary>
    public float[] Latents { get; private set; } = [];

    /// <summary>The T5 states broadcast to every image, <c>[NumImages, TextTokens, context]</c>.</summary>
    public float[] Txt { get; private set; } = [];

    /// <summary>The pooled CLIP vector broadcast to every image, <c>[NumImages, vec]</c>.</summary>
    public float[] Pooled { get; private set; } = [];

    /// <summary>The timesteps t₀ = 1 … t_N = 0 (docs/flux-model.md §6.1); the request runs from t[StartStep].</summary>
    public double[] Schedule { get; private set; } = [];

    /// <summary>Denoising steps done.</summary>
    public int Step { get; set; }

    public bool Denoised => Step == Plan.Steps;

    /// <summary>Its images' step caches (one each), created at its first step when the plan asks for caching.</summary>
    public FluxStepCache[]? StepCaches { get; private set; }

    /// <summary>Transformer blocks its images ran so far, and would have run without caching.</summary>
    public long BlocksComputed { get; set; }

    public long BlocksTotal { get; set; }

    /// <summary>Image-steps that reused the cached middle blocks.</summary>
    public int CachedSteps { get; set; }

    /// <summary>Creates the step caches on the first step (on the scheduler thread), when the plan asks for caching.</summary>
    public void EnsureStepCaches(FluxTransformer transformer)
    {
        if (StepCaches is null && Plan.StepCache is { } options)
        {
            var caches = new FluxStepCache[Plan.NumImages];
            for (int k = 0; k < caches.Length; k++)
            {
                caches[k] = FluxStepCache.Create(transformer, options, Plan.StepsToRun);
            }

            StepCaches = caches;
        }
    }

    /// <summary>Frees the step caches (their residuals are large); called on the scheduler thread when it leaves the batch.</summary>
    public void ReleaseStepCaches()
    {
        if (StepCaches is { } caches)
        {
            StepCaches = null;
            foreach (FluxStepCache cache in caches)
            {
                cache.Dispose();
            }
        }
    }

    /// <summary>The most images in one forward this request was part of.</summary>
    public int PeakBatchImages { get; set; }

    public TimeSpan Elapsed => clock.Elapsed;

    public TimeSpan TextEncoding { get; private set; }

    /// <summary>The part of <see cref="TextEncoding"/> spent in the tokenizers.</summary>
    public TimeSpan Tokenization { get; set; }

    /// <summary>When its first step started (the end of waiting and preparing).</summary>
    public TimeSpan? Admitted { get; set; }

    /// <summary>When its last step finished.</summary>
    public TimeSpan DenoisedAt { get; set; }

    /// <summary>Reports <see cref="GenerationStage.Preparing"/> once, when work on this request begins (encoding or its first step).</summary>
    public void ReportStarted()
    {
        if (!started)
        {
            started = true;
            Progress?.Report(new GenerationProgress(GenerationStage.Preparing, 0, Plan.StepsToRun, Elapsed, 0));
        }
    }

    /// <summary>Progress counts the steps this request runs: all of them, or those after <see cref="GenerationPlan.StartStep"/> (image-to-image).</summary>
    public void ReportStep()
    {
        TimeSpan elapsed = Elapsed;
        int done = Step - Plan.StartStep;
        double denoising = (elapsed - (Admitted ?? TimeSpan.Zero)).TotalSeconds;
        Progress?.Report(new GenerationProgress(GenerationStage.Denoising, done, Plan.StepsToRun, elapsed, done / Math.Max(denoising, 1e-9))
        {
            Previews = Progress is not null && Preview is not null && (done % Request.PreviewEvery == 0 || done == Plan.StepsToRun) ? RenderPreviews(Preview) : null,
        });
    }

    /// <summary>The projection for previews, set by the preparing stage when the request asks for them.</summary>
    public LatentPreview? Preview { get; set; }

    /// <summary>Each image's current latents as a small RGB picture.</summary>
    private RgbImage[] RenderPreviews(LatentPreview preview)
    {
        int n = Plan.NumImages, h = Plan.LatentHeight, w = Plan.LatentWidth, z = Latents.Length / (n * h * w);
        float[] unpacked = FluxNative.Latents.Unpack(Latents, n, z, h, w);
        var previews = new RgbImage[n];
        for (int k = 0; k < n; k++)
        {
            previews[k] = preview.Render(unpacked.AsSpan(k * z * h * w, z * h * w), h, w);
        }

        return previews;
    }

    public void ReportStage(GenerationStage stage) =>
        Progress?.Report(new GenerationProgress(stage, Plan.StepsToRun, Plan.StepsToRun, Elapsed, StepsPerSecond));

    public double StepsPerSecond => Plan.StepsToRun / Math.Max((DenoisedAt - (Admitted ?? TimeSpan.Zero)).TotalSeconds, 1e-9);

    /// <summary>
    /// Makes the request ready to join a batch (called on the preparing thread, once): its embeddings, broadcast to
    /// every image; its initial packed latents <c>[NumImages, ImageTokens, 4z]</c>; its schedule; and the step it
    /// starts from (0, or later for image-to-image).
    /// </summary>
    public void Start(PromptEmbeddings embeddings, TimeSpan textEncoding, float[] packedLatents, double[] schedule, int startStep)
    {
        int n = Plan.NumImages;
        Embeddings = embeddings;
        TextEncoding = textEncoding;
        Txt = Broadcast(embeddings.Txt, embeddings.Batch, n);
        Pooled = Broadcast(embeddings.Pooled, embeddings.Batch, n);
        Latents = packedLatents;
        Schedule = schedule;
        Step = startStep;
        IsReady = true;
    }

    private static float[] Broadcast(float[] values, int batch, int count)
    {
        if (batch == count)
        {
            return values;
        }

        var result = new float[values.Length * count];
        for (int k = 0; k < count; k++)
        {
            values.CopyTo(result, k * values.Length);
        }

        return result;
    }
}
