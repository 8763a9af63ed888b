using System.Diagnostics;

namespace FluxNative.Cli;

/// <summary>What <c>flux bench</c> was asked to measure.</summary>
internal sealed record BenchRequest
{
    /// <summary>Where the weights come from: <c>model</c>, <c>synthetic</c> or <c>demo</c>.</summary>
    public required string Source { get; init; }

    /// <summary>The model as the report names it: a path, or the synthetic model's summary.</summary>
    public required string ModelName { get; init; }

    public required FluxPipelineSources Sources { get; init; }

    public required FluxPipelineOptions Options { get; init; }

    public required int Width { get; init; }

    public required int Height { get; init; }

    /// <summary>Denoising steps; null for the variant's default.</summary>
    public int? Steps { get; init; }

    public double? Guidance { get; init; }

    /// <summary>Images per request (they share every transformer forward).</summary>
    public int Batch { get; init; } = 1;

    /// <summary>Untimed runs before the timed ones.</summary>
    public int Warmup { get; init; } = 1;

    /// <summary>Timed runs.</summary>
    public int Runs { get; init; } = 3;

    public ImageFormat Format { get; init; } = ImageFormat.Png;

    public string Prompt { get; init; } = DefaultPrompt;

    public ProgressMode Progress { get; init; }

    /// <summary>How much transformer work the steps may reuse (step caching; <see cref="SpeedMode.Lossless"/>: none).</summary>
    public SpeedMode SpeedMode { get; init; } = SpeedMode.Lossless;

    /// <summary>The prompt every run encodes (the prompt cache is off, so each run pays for its encoding).</summary>
    public const string DefaultPrompt = "a photograph of a red fox standing in fresh snow at dawn, shallow depth of field";
}

/// <summary>One timed generation: the pipeline's stage times and the time of each denoising step.</summary>
internal sealed record BenchRun(GenerationTimings Timings, IReadOnlyList<double> StepMilliseconds, int PeakBatchImages)
{
    /// <summary>The share of the transformer's blocks that ran (1 without step caching).</summary>
    public double BlocksComputedShare { get; init; } = 1;
}

/// <summary>What <c>flux bench</c> measured: the runs, the load, memory, and what it ran on.</summary>
internal sealed record BenchResult
{
    public required BenchRequest Request { get; init; }

    public required GenerationPlan Plan { get; init; }

    public required string ModelSummary { get; init; }

    public required TimeSpan Load { get; init; }

    /// <summary>When the synthetic weights had to be written first, how long that took (not part of <see cref="Load"/>).</summary>
    public TimeSpan? SyntheticWrite { get; init; }

    public required IReadOnlyList<BenchRun> Runs { get; init; }

    /// <summary>The process's peak resident memory (VmHWM) at the end, and its resident memory just after loading.</summary>
    public long? PeakHostBytes { get; init; }

    public long? HostBytesAfterLoad { get; init; }

    /// <summary>On a GPU: the most FluxNative's memory arenas held on it at once (null on the CPU).</summary>
    public long? PeakDeviceBytes { get; init; }

    public required MachineDescription Machine { get; init; }
}

/// <summary>
/// <c>flux bench</c>'s measurement: loads the pipeline once (timed), runs the warm-up generations, then the timed
/// ones, each a complete request (prompt text to encoded image file) through <see cref="FluxPipeline.GenerateAsync"/>
/// with the prompt cache off, so every stage is paid for in every run. Step times come from the pipeline's progress
/// reports, taken on the denoising thread as each step ends.
/// </summary>
internal static class Benchmark
{
    public static async Task<BenchResult> RunAsync(BenchRequest bench, CliConsole console, CancellationToken cancellationToken, TimeSpan? syntheticWrite = null)
    {
        ArgumentNullException.ThrowIfNull(bench);
        ArgumentNullException.ThrowIfNull(console);
        long loadStarted = Stopwatch.GetTimestamp();
        using FluxPipeline pipeline = FluxPipeline.Load(bench.Sources, bench.Options with { PromptCacheSize = 0 });
        TimeSpan load = Stopwatch.GetElapsedTime(loadStarted);
        long? afterLoad = HostMemory.Resident();
        console.Note($"model    {pipeline.Transformer.Config.Summary}");
        console.Note(FormattableString.Invariant($"load     {load.TotalSeconds:F2} s"));

        GenerationRequest request = new()
        {
            Prompt = bench.Prompt,
            Width = bench.Width,
            Height = bench.Height,
            Steps = bench.Steps,
            Guidance = bench.Guidance,
            Seed = 42,
            NumImages = bench.Batch,
            OutputFormat = bench.Format,
            WriteMetadata = false,
            SpeedMode = bench.SpeedMode,
        };
        GenerationPlan plan = pipeline.Plan(request);
        foreach (string warning in plan.Warnings)
        {
            console.Warn(warning);
        }

        console.Note(FormattableString.Invariant(
            $"request  {plan.Width}x{plan.Height}, {plan.Steps} steps, batch {plan.NumImages}, {Images.Extension(plan.Format)}; {bench.Warmup} warm-up + {bench.Runs} timed run(s)"));

        var runs = new List<BenchRun>();
        int total = bench.Warmup + bench.Runs;
        for (int i = 0; i < total; i++)
        {
            bool warmup = i < bench.Warmup;
            string label = warmup ? $"warm-up {i + 1}/{bench.Warmup}" : $"run {i - bench.Warmup + 1}/{bench.Runs}";
            var stepEnds = new List<TimeSpan>();
            GenerationResult result = await ProgressDisplay.RunAsync(pipeline, request, bench.Progress, console, cancellationToken, label,
                p =>
                {
                    if (p.Stage == GenerationStage.Denoising && p.Step > stepEnds.Count)
                    {
                        stepEnds.Add(p.Elapsed);
                    }
                }).ConfigureAwait(false);
            if (!warmup)
            {
                runs.Add(new BenchRun(result.Timings, StepTimes(result.Timings, stepEnds), result.PeakBatchImages) { BlocksComputedShare = result.BlocksComputedShare });
            }
        }

        return new BenchResult
        {
            Request = bench,
            Plan = plan,
            // An engine says what it was built as: its weights are not the load options'.
            ModelSummary = pipeline.Transformer.Config.Summary + (bench.Sources.ModelDirectory is { } model && FluxEngine.TryRead(model) is { } engine
                ? $"; {engine.Precision.ToString().ToLowerInvariant()} engine, packed as {engine.TargetLayout}"
                : string.Empty),
            Load = load,
            SyntheticWrite = syntheticWrite,
            Runs = runs,
            PeakHostBytes = HostMemory.Peak(),
            HostBytesAfterLoad = afterLoad,
            PeakDeviceBytes = MachineDescription.PeakDeviceBytes(bench.Options.Device),
            Machine = MachineDescription.Current(bench.Options.Device),
        };
    }

    /// <summary>
    /// Each step's time from the times its end was reported (since the request was queued): the first step starts when
    /// the request was admitted (<see cref="GenerationTimings.Prepare"/>).
    /// </summary>
    public static double[] StepTimes(GenerationTimings timings, IReadOnlyList<TimeSpan> stepEnds)
    {
        ArgumentNullException.ThrowIfNull(timings);
        ArgumentNullException.ThrowIfNull(stepEnds);
        var steps = new double[stepEnds.Count];
        TimeSpan previous = timings.Prepare;
        for (int k = 0; k < stepEnds.Count; k++)
        {
            steps[k] = Math.Max(0, (stepEnds[k] - previous).TotalMilliseconds);
            previous = stepEnds[k];
        }

        return steps;
    }
}

/// <summary>The process's resident memory, from <c>/proc/self/status</c> (Linux; null elsewhere).</summary>
internal static class HostMemory
{
    /// <summary>The peak resident set size (VmHWM), in bytes.</summary>
    public static long? Peak() => Read("VmHWM:");

    /// <summary>The resident set size now (VmRSS), in bytes.</summary>
    public static long? Resident() => Read("VmRSS:");

    private static long? Read(string field)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status"))
            {
                if (line.StartsWith(field, StringComparison.Ordinal))
                {
                    string[] parts = line[field.Length..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                    return parts.Length == 2 && parts[1] == "kB" && long.TryParse(parts[0], out long kb) ? kb * 1024 : null;
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
