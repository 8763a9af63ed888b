using System.Globalization;
using Spectre.Console;

namespace FluxNative.Cli;

/// <summary>What <c>flux generate</c> was asked to do.</summary>
internal sealed record GenerateCliRequest
{
    public string? Prompt { get; init; }
    public string? Model { get; init; }
    public string? Transformer { get; init; }
    public string? Autoencoder { get; init; }
    public string? Clip { get; init; }
    public string? T5 { get; init; }
    public int? MaxLength { get; init; }
    public bool Demo { get; init; }
    public string? AspectRatio { get; init; }
    public int? ImageSize { get; init; }
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int? Steps { get; init; }
    public double? Guidance { get; init; }
    public long? Seed { get; init; }
    public int NumImages { get; init; } = 1;
    public string? Format { get; init; }
    public int Quality { get; init; } = 80;
    public string? Output { get; init; }
    public string? Latents { get; init; }
    public string? PromptEmbeds { get; init; }
    public string? SaveLatents { get; init; }
    public PixelRounding Rounding { get; init; }
    public FluxWeightFormat WeightFormat { get; init; }
    public FluxActivationPrecision Activations { get; init; }
    public int Threads { get; init; }
}

/// <summary>What one <c>flux generate</c> did, for the tests.</summary>
internal sealed record GenerateReport(GenerationResult Result, IReadOnlyList<string> Files);

/// <summary>
/// <c>flux generate</c>: loads the pipeline (or the demo's tiny models), reads given latents and prompt
/// embeddings, generates, writes the files, prints seed and timings. Progress is a Spectre.Console bar on
/// a terminal, one line per step otherwise.
/// </summary>
internal static class ImageGeneration
{
    public static GenerateReport Run(GenerateCliRequest cli, TextWriter output, CancellationToken cancellationToken)
    {
        if (cli.Demo && (cli.Model ?? cli.Transformer ?? cli.Autoencoder ?? cli.Clip ?? cli.T5) is not null)
        {
            throw new CliInputException("--demo uses its own tiny models; leave out --model, --transformer, --ae, --clip and --t5.");
        }

        FluxPipelineSources sources = cli.Demo
            ? DemoModels.Write(Path.Combine(Path.GetTempPath(), "fluxnative-demo-2"))
            : new FluxPipelineSources { ModelDirectory = cli.Model, Transformer = cli.Transformer, Autoencoder = cli.Autoencoder, Clip = cli.Clip, T5 = cli.T5 };
        FluxPipelineOptions options = (cli.Demo ? DemoModels.Options : new FluxPipelineOptions()) with
        {
            TransformerWeights = cli.WeightFormat,
            Activations = cli.Activations,
            Threads = cli.Threads,
        };
        if (cli.MaxLength is int maxLength)
        {
            options = options with { T5MaxLength = maxLength };
        }

        ImageFormat format = ResolveFormat(cli);
        using FluxPipeline pipeline = FluxPipeline.Load(sources, options);
        PromptEmbeddings? embeddings = cli.PromptEmbeds is not null ? ReadEmbeddings(cli.PromptEmbeds) : null;
        string? prompt = cli.Prompt ?? (cli.Demo && embeddings is null ? DemoModels.DefaultPrompt : null);
        GenerationRequest request = new()
        {
            Prompt = prompt,
            PromptEmbeddings = embeddings,
            AspectRatio = cli.AspectRatio,
            ImageSize = cli.ImageSize ?? (cli.Demo && cli.Width is null ? DemoModels.DefaultImageSize : null),
            Width = cli.Width,
            Height = cli.Height,
            Steps = cli.Steps,
            Guidance = cli.Guidance,
            Seed = cli.Seed,
            NumImages = cli.NumImages,
            OutputFormat = format,
            OutputQuality = cli.Quality,
            Rounding = cli.Rounding,
            InitialLatents = cli.Latents is null ? null : ReadLatents(cli.Latents),
            ReturnLatents = cli.SaveLatents is not null,
        };

        GenerationPlan plan = pipeline.Plan(request);   // a GenerationRequestException is reported as bad input
        if (prompt is not null && embeddings is null)
        {
            output.WriteLine($"prompt   \"{prompt}\" (CLIP 77 tokens, T5 {pipeline.PromptEncoder!.T5MaxLength} tokens)");
        }

        request = request with { Seed = plan.Seed };  // the seed printed is the seed used

        if (cli.Demo)
        {
            output.WriteLine("demo     tiny random models: the real tokenizers, random weights everywhere else (the image is noise, not the prompt)");
        }

        output.WriteLine(FormattableString.Invariant(
            $"model    {pipeline.Variant.ToString().ToLowerInvariant()}: {pipeline.Transformer.Config.Summary}"));
        output.WriteLine(FormattableString.Invariant(
            $"request  {plan.Width}x{plan.Height}, {plan.Steps} steps, guidance {plan.Guidance}, seed {plan.Seed}, {plan.NumImages} image(s), {Images.Extension(plan.Format)}"));

        GenerationResult result = RunWithProgress(pipeline, request, plan.Steps, output, cancellationToken);
        IReadOnlyList<string> files = WriteImages(result, cli.Output);
        foreach (string file in files)
        {
            output.WriteLine($"wrote    {file}");
        }

        if (cli.SaveLatents is not null)
        {
            new SafetensorsWriter()
                .Add("latents", result.FinalLatents!, plan.NumImages, pipeline.Autoencoder.Config.ZChannels, plan.LatentHeight, plan.LatentWidth)
                .Write(cli.SaveLatents);
            output.WriteLine($"wrote    {cli.SaveLatents} (final latents)");
        }

        GenerationTimings t = result.Timings;
        output.WriteLine(request.InitialLatents is null
            ? $"seed     {plan.Seed}{(plan.NumImages > 1 ? $" (image k: {plan.Seed} + k)" : string.Empty)}"
            : "seed     none (latents given)");
        output.WriteLine(FormattableString.Invariant(
            $"timings  prepare {t.Prepare.TotalMilliseconds:F0} ms, denoise {t.Denoise.TotalMilliseconds:F0} ms ({t.StepsPerSecond:F2} it/s), decode {t.Decode.TotalMilliseconds:F0} ms, encode {t.Encode.TotalMilliseconds:F0} ms, total {t.Total.TotalMilliseconds:F0} ms"));
        return new GenerateReport(result, files);
    }

    private static GenerationResult RunWithProgress(FluxPipeline pipeline, GenerationRequest request, int steps, TextWriter output, CancellationToken cancellationToken)
    {
        bool terminal = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected;
        if (!terminal)
        {
            var lines = new SynchronousProgress(p =>
            {
                if (p.Stage == GenerationStage.Denoising)
                {
                    output.WriteLine(FormattableString.Invariant($"step     {p.Step}/{p.TotalSteps}  {p.StepsPerSecond:F2} it/s"));
                }
            });
            return pipeline.GenerateAsync(request, lines, cancellationToken).GetAwaiter().GetResult();
        }

        GenerationResult? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .Start(context =>
            {
                ProgressTask task = context.AddTask("denoising", maxValue: steps);
                var bar = new SynchronousProgress(p =>
                {
                    task.Value = p.Step;
                    task.Description = p.Stage == GenerationStage.Denoising
                        ? FormattableString.Invariant($"denoising {p.StepsPerSecond:F2} it/s")
                        : p.Stage.ToString().ToLowerInvariant();
                });
                result = pipeline.GenerateAsync(request, bar, cancellationToken).GetAwaiter().GetResult();
            });
        return result!;
    }

    private static ImageFormat ResolveFormat(GenerateCliRequest cli)
    {
        if (cli.Format is not null)
        {
            return Images.TryParseFormat(cli.Format, out ImageFormat chosen) ? chosen : throw new CliInputException($"Unknown format '{cli.Format}'.");
        }

        string extension = Path.GetExtension(cli.Output ?? string.Empty).TrimStart('.');
        return Images.TryParseFormat(extension, out ImageFormat fromName) ? fromName : ImageFormat.Png;
    }

    /// <summary>Writes the images: -o as given for one image, NAME-1.EXT … NAME-N.EXT for several.</summary>
    internal static IReadOnlyList<string> WriteImages(GenerationResult result, string? output)
    {
        string extension = Images.Extension(result.Plan.Format);
        string path = output ?? string.Create(CultureInfo.InvariantCulture, $"flux-{result.Plan.Seed}.{extension}");
        var files = new List<string>();
        for (int k = 0; k < result.Images.Count; k++)
        {
            string file = result.Images.Count == 1
                ? path
                : Path.Combine(Path.GetDirectoryName(path) ?? string.Empty,
                    string.Create(CultureInfo.InvariantCulture, $"{Path.GetFileNameWithoutExtension(path)}-{k + 1}{Path.GetExtension(path)}"));
            string? directory = Path.GetDirectoryName(Path.GetFullPath(file));
            if (directory is not null)
            {
                Directory.CreateDirectory(directory);
            }

            File.WriteAllBytes(file, result.Images[k].Bytes);
            files.Add(file);
        }

        return files;
    }

    private static float[] ReadLatents(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        TensorInfo info = file.Find("latents") ?? throw new CliInputException($"{path}: no tensor 'latents' [N, 16, h, w].");
        if (info.Shape.Count != 4)
        {
            throw new CliInputException($"{path}: latents has shape [{string.Join(", ", info.Shape)}]; expected [N, 16, h, w].");
        }

        return file.ReadFloat32("latents");
    }

    private static PromptEmbeddings ReadEmbeddings(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        TensorInfo txt = file.Find("txt") ?? throw new CliInputException($"{path}: no tensor 'txt' [B, L, 4096].");
        TensorInfo y = file.Find("y") ?? throw new CliInputException($"{path}: no tensor 'y' [B, 768].");
        if (txt.Shape.Count != 3 || y.Shape.Count != 2 || txt.Shape[0] != y.Shape[0])
        {
            throw new CliInputException(
                $"{path}: txt is [{string.Join(", ", txt.Shape)}] and y is [{string.Join(", ", y.Shape)}]; expected txt [B, L, 4096] and y [B, 768] with the same B.");
        }

        return new PromptEmbeddings(file.ReadFloat32("txt"), file.ReadFloat32("y"), checked((int)txt.Shape[0]), checked((int)txt.Shape[1]));
    }

    /// <summary>An IProgress that calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool, out of order).</summary>
    private sealed class SynchronousProgress(Action<GenerationProgress> report) : IProgress<GenerationProgress>
    {
        public void Report(GenerationProgress value) => report(value);
    }
}
