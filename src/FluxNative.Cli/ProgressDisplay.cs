using System.Globalization;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace FluxNative.Cli;

/// <summary>How <c>flux generate</c> shows its progress (<c>--progress</c>), always on standard error.</summary>
internal enum ProgressMode
{
    /// <summary>A live bar when standard error is a terminal, plain lines otherwise.</summary>
    Auto,

    /// <summary>A live bar (Spectre.Console), whatever standard error is.</summary>
    Bar,

    /// <summary>One line per denoising step and per stage.</summary>
    Lines,

    /// <summary>Nothing.</summary>
    None,
}

/// <summary>
/// The progress of a generation on standard error, in tqdm's shape (<c>11/50 [00:01&lt;00:04, 9.00it/s]</c>: steps,
/// elapsed &lt; remaining, rate): a live Spectre.Console bar on a terminal, plain lines otherwise. The bar hides the
/// cursor while it runs and shows it again however the run ends, cancellation included.
/// </summary>
internal static class ProgressDisplay
{
    public static readonly string[] ModeNames = ["auto", "bar", "lines", "none"];

    public static ProgressMode ParseMode(string name) => name switch
    {
        "auto" => ProgressMode.Auto,
        "bar" => ProgressMode.Bar,
        "lines" => ProgressMode.Lines,
        "none" => ProgressMode.None,
        _ => throw new CliInputException($"--progress must be one of {string.Join(", ", ModeNames)} (got '{name}')."),
    };

    /// <summary>
    /// Runs the generation, showing its progress as <paramref name="mode"/> says. <paramref name="label"/> goes before the
    /// stage (<c>run 2/3</c>); <paramref name="observe"/> sees every report first, on the thread that made it.
    /// </summary>
    public static async Task<GenerationResult> RunAsync(
        FluxPipeline pipeline, GenerationRequest request, ProgressMode mode, CliConsole console, CancellationToken cancellationToken,
        string? label = null, Action<GenerationProgress>? observe = null)
    {
        string prefix = label is null ? string.Empty : label + " ";
        if (mode == ProgressMode.Auto)
        {
            mode = console.ErrorIsTerminal ? ProgressMode.Bar : ProgressMode.Lines;
        }

        switch (mode)
        {
            case ProgressMode.None:
                return await pipeline.GenerateAsync(request, observe is null ? null : new SynchronousProgress(observe), cancellationToken).ConfigureAwait(false);
            case ProgressMode.Lines:
                GenerationStage? stage = null;
                var lines = new SynchronousProgress(p =>
                {
                    observe?.Invoke(p);
                    if (p.Stage == GenerationStage.Denoising)
                    {
                        console.Note($"{prefix}denoising  {StepText(p)}");
                    }
                    else if (p.Stage != stage && p.Stage != GenerationStage.Preparing)
                    {
                        console.Note(prefix + StageName(p.Stage));
                    }

                    stage = p.Stage;
                });
                return await pipeline.GenerateAsync(request, lines, cancellationToken).ConfigureAwait(false);
            default:
                return await RunWithBarAsync(pipeline, request, console, prefix, observe, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// tqdm's counter for a denoising step: <c>11/50 [00:01&lt;00:04, 9.00it/s]</c> (elapsed since the run began,
    /// remaining at the current rate; below one step a second the rate is <c>s/it</c>, as tqdm writes it).
    /// </summary>
    public static string StepText(GenerationProgress p)
    {
        bool known = p.Step > 0 && p.StepsPerSecond > 0 && double.IsFinite(p.StepsPerSecond);
        string remaining = known ? Interval(TimeSpan.FromSeconds((p.TotalSteps - p.Step) / p.StepsPerSecond)) : "?";
        string rate = !known ? "?it/s"
            : p.StepsPerSecond >= 1 ? string.Create(CultureInfo.InvariantCulture, $"{p.StepsPerSecond:F2}it/s")
            : string.Create(CultureInfo.InvariantCulture, $"{1 / p.StepsPerSecond:F2}s/it");
        return $"{p.Step}/{p.TotalSteps} [{Interval(p.Elapsed)}<{remaining}, {rate}]";
    }

    /// <summary>tqdm's <c>format_interval</c>: <c>MM:SS</c>, or <c>H:MM:SS</c> from an hour.</summary>
    public static string Interval(TimeSpan time)
    {
        long seconds = (long)Math.Max(0, time.TotalSeconds);
        long hours = seconds / 3600, minutes = seconds / 60 % 60;
        return hours > 0
            ? string.Create(CultureInfo.InvariantCulture, $"{hours}:{minutes:00}:{seconds % 60:00}")
            : string.Create(CultureInfo.InvariantCulture, $"{minutes:00}:{seconds % 60:00}");
    }

    /// <summary>A console that draws the live bar on standard error (forced interactive: <c>--progress bar</c> asks for it).</summary>
    internal static IAnsiConsole BarConsole(TextWriter error) => AnsiConsole.Create(new AnsiConsoleSettings
    {
        Ansi = AnsiSupport.Yes,
        Interactive = InteractionSupport.Yes,
        ColorSystem = ColorSystemSupport.Standard,
        Out = new AnsiConsoleOutput(error),
    });

    private static async Task<GenerationResult> RunWithBarAsync(
        FluxPipeline pipeline, GenerationRequest request, CliConsole console, string prefix, Action<GenerationProgress>? observe, CancellationToken cancellationToken)
    {
        var counter = new CounterColumn();
        IAnsiConsole terminal = BarConsole(console.Error);
        // Progress restores the cursor in a finally block: a cancelled run (OperationCanceledException) leaves the terminal as it found it.
        return await terminal.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), counter)
            .StartAsync(async context =>
            {
                ProgressTask task = context.AddTask(prefix + StageName(GenerationStage.Preparing), maxValue: Math.Max(1, request.Steps ?? pipeline.DefaultSteps));
                var bar = new SynchronousProgress(p =>
                {
                    observe?.Invoke(p);
                    task.MaxValue = Math.Max(1, p.TotalSteps);
                    task.Value = p.Step;
                    task.Description = prefix + StageName(p.Stage);
                    counter.Text = StepText(p);
                });
                GenerationResult result = await pipeline.GenerateAsync(request, bar, cancellationToken).ConfigureAwait(false);
                task.Description = prefix + "done";
                task.StopTask();
                return result;
            })
            .ConfigureAwait(false);
    }

    private static string StageName(GenerationStage stage) => stage switch
    {
        GenerationStage.Preparing => "preparing",
        GenerationStage.Denoising => "denoising",
        GenerationStage.Decoding => "decoding",
        GenerationStage.Encoding => "writing",
        _ => stage.ToString().ToLowerInvariant(),
    };

    /// <summary>The tqdm counter as a bar column (plain text: its brackets are not markup).</summary>
    private sealed class CounterColumn : ProgressColumn
    {
        public volatile string Text = string.Empty;

        public override IRenderable Render(RenderOptions options, ProgressTask task, TimeSpan deltaTime) => new Text(Text);
    }

    /// <summary>An IProgress that calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool, out of order).</summary>
    private sealed class SynchronousProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
