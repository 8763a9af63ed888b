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

    /// <summary>Ready to join a batch: encoded, and its latents and schedule drawn.</summary>
    public bool IsReady { get; private set; }

    /// <summary>T5 tokens per image: requests join one batch only with the same count (and the same size).</summary>
    public int TextTokens => Embeddings?.Tokens ?? 0;

    /// <summary>Packed latents <c>[NumImages, ImageTokens, 4z]</c>, advanced in place by each Euler step.</summary>
    public float[] Latents { get; private set; } = [];

    /// <summary>The T5 states broadcast to every image, <c>[NumImages, TextTokens, context]</c>.</summary>
    public float[] Txt { get; private set; } = [];

    /// <summary>The pooled CLIP vector broadcast to every image, <c>[NumImages, vec]</c>.</summary>
    public float[] Pooled { get; private set; } = [];

    /// <summary>The timesteps t₀ = 1 … t_N = 0 (docs/flux-model.md §6.1).</summary>
    public double[] Schedule { get; private set; } = [];

    /// <summary>Denoising steps done.</summary>
    public int Step { get; set; }

    public bool Denoised => Step == Plan.Steps;

    /// <summary>The most images in one forward this request was part of.</summary>
    public int PeakBatchImages { get; set; }

    public TimeSpan Elapsed => clock.Elapsed;

    public TimeSpan TextEncoding { get; private set; }

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
            Progress?.Report(new GenerationProgress(GenerationStage.Preparing, 0, Plan.Steps, Elapsed, 0));
        }
    }

    public void ReportStep()
    {
        TimeSpan elapsed = Elapsed;
        double denoising = (elapsed - (Admitted ?? TimeSpan.Zero)).TotalSeconds;
        Progress?.Report(new GenerationProgress(GenerationStage.Denoising, Step, Plan.Steps, elapsed, Step / Math.Max(denoising, 1e-9)));
    }

    public void ReportStage(GenerationStage stage) =>
        Progress?.Report(new GenerationProgress(stage, Plan.Steps, Plan.Steps, Elapsed, StepsPerSecond));

    public double StepsPerSecond => Plan.Steps / Math.Max((DenoisedAt - (Admitted ?? TimeSpan.Zero)).TotalSeconds, 1e-9);

    public void SetEncoded(PromptEmbeddings embeddings, TimeSpan took)
    {
        Embeddings = embeddings;
        TextEncoding = took;
    }

    /// <summary>
    /// Draws what the steps need, off the denoising thread: the seeded noise (image k from seed + k, as alone) or the
    /// caller's latents, packed; the schedule; the embeddings broadcast to every image.
    /// </summary>
    public void Prepare(int zChannels, bool shiftSchedule)
    {
        PromptEmbeddings e = Embeddings ?? throw new InvalidOperationException("The prompt is not encoded yet.");
        int n = Plan.NumImages, h = Plan.LatentHeight, w = Plan.LatentWidth;
        float[] noise = Request.InitialLatents ?? LatentNoise.Generate(Plan.Seed, n, zChannels, h, w);
        Latents = FluxNative.Latents.Pack(noise, n, zChannels, h, w);
        Schedule = FluxSchedule.Timesteps(Plan.Steps, Plan.ImageTokens, shiftSchedule);
        Txt = Broadcast(e.Txt, e.Batch, n);
        Pooled = Broadcast(e.Pooled, e.Batch, n);
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
