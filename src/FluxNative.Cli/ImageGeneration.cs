using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

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
    public string? Image { get; init; }
    public double? Strength { get; init; }
    public string? PromptEmbeds { get; init; }
    public string? SaveLatents { get; init; }
    public PixelRounding Rounding { get; init; }
    public SpeedMode SpeedMode { get; init; }
    public double? CacheThreshold { get; init; }
    public FluxWeightFormat WeightFormat { get; init; }
    public FluxActivationPrecision Activations { get; init; }
    public int Threads { get; init; }
    public FluxDevice Device { get; init; } = FluxDevice.Cpu;
    public IReadOnlyList<FluxLora> Loras { get; init; } = [];
    public ProgressMode Progress { get; init; }
    public bool Json { get; init; }
    public bool WriteMetadata { get; init; } = true;
}

/// <summary>What one <c>flux generate</c> did, for the tests.</summary>
internal sealed record GenerateReport(GenerationResult Result, IReadOnlyList<string> Files);

/// <summary>
/// <c>flux generate</c>: checks where the files go, loads the pipeline (or the demo's tiny models), reads given
/// latents and prompt embeddings, generates with progress on standard error, writes the files. Standard output
/// carries the result only: the files written, one a line (or one JSON object with <c>--json</c>); notes, warnings,
/// seed and timings go to standard error.
/// </summary>
internal static class ImageGeneration
{
    /// <summary>JSON for people's terminals as well as machines: apostrophes and non-ASCII prompts as they are, not \u escapes.</summary>
    private static readonly JsonSerializerOptions JsonOutput = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static async Task<GenerateReport> RunAsync(GenerateCliRequest cli, CliConsole console, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(cli);
        ArgumentNullException.ThrowIfNull(console);

        // Everything that can be checked without the model is, before it loads.
        OutputTarget target = OutputTarget.Resolve(cli.Output, cli.Format);
        if (cli.SaveLatents is not null)
        {
            OutputTarget.CheckWritable(cli.SaveLatents, "--save-latents");
        }

        PromptEmbeddings? embeddings = cli.PromptEmbeds is not null ? ReadEmbeddings(cli.PromptEmbeds) : null;
        float[]? initialLatents = cli.Latents is null ? null : ReadLatents(cli.Latents);
        RgbImage? image = cli.Image is null ? null : ReadImage(cli.Image);

        FluxPipelineSources sources = cli.Demo
            ? DemoModels.Write(Path.Combine(Path.GetTempPath(), "fluxnative-demo-2"))
            : new FluxPipelineSources { ModelDirectory = cli.Model, Transformer = cli.Transformer, Autoencoder = cli.Autoencoder, Clip = cli.Clip, T5 = cli.T5 };
        FluxPipelineOptions options = (cli.Demo ? DemoModels.Options : new FluxPipelineOptions()) with
        {
            TransformerWeights = cli.WeightFormat,
            Activations = cli.Activations,
            Threads = cli.Threads,
            Device = cli.Device,
            Loras = cli.Loras,
        };
        if (cli.MaxLength is int maxLength)
        {
            options = options with { T5MaxLength = maxLength };
        }

        using FluxPipeline pipeline = FluxPipeline.Load(sources, options);
        string? prompt = cli.Prompt ?? (cli.Demo && embeddings is null ? DemoModels.DefaultPrompt : null);
        GenerationRequest request = new()
        {
            Prompt = prompt,
            PromptEmbeddings = embeddings,
            AspectRatio = cli.AspectRatio,
            ImageSize = cli.ImageSize ?? (cli.Demo && cli.Width is null && image is null ? DemoModels.DefaultImageSize : null),
            Width = cli.Width,
            Height = cli.Height,
            Steps = cli.Steps,
            Guidance = cli.Guidance,
            Seed = cli.Seed,
            NumImages = cli.NumImages,
            OutputFormat = target.Format,
            OutputQuality = cli.Quality,
            Rounding = cli.Rounding,
            SpeedMode = cli.SpeedMode,
            StepCache = cli.CacheThreshold is { } threshold ? (StepCacheOptions.For(cli.SpeedMode) ?? new StepCacheOptions()) with { Threshold = threshold } : null,
            InitialLatents = initialLatents,
            ReturnLatents = cli.SaveLatents is not null,
            Image = image,
            Strength = cli.Strength,
            WriteMetadata = cli.WriteMetadata,
        };

        GenerationPlan plan = pipeline.Plan(request);   // a GenerationRequestException is reported as bad input
        request = request with { Seed = plan.Seed };    // the seed printed is the seed used
        if (prompt is not null && embeddings is null)
        {
            console.Note($"prompt   \"{prompt}\" (CLIP 77 tokens, T5 {pipeline.PromptEncoder!.T5MaxLength} tokens)");
        }

        if (cli.Demo)
        {
            console.Note("demo     tiny random models: the real tokenizers, random weights everywhere else (the image is noise, not the prompt)");
        }

        console.Note($"model    {pipeline.Transformer.Config.Summary}");
        console.Note(FormattableString.Invariant(
            $"request  {plan.Width}x{plan.Height}, {plan.Steps} steps, guidance {plan.Guidance}, seed {plan.Seed}, {plan.NumImages} image(s), {Images.Extension(plan.Format)}"));
        if (plan.Strength is double strength)
        {
            console.Note(string.Create(CultureInfo.InvariantCulture,
                $"image    {cli.Image}, strength {strength}: steps {plan.StartStep + 1}-{plan.Steps} of {plan.Steps} run"));
        }

        foreach (string warning in plan.Warnings)
        {
            console.Warn(warning);
        }

        GenerationResult result = await ProgressDisplay.RunAsync(pipeline, request, cli.Progress, console, cancellationToken).ConfigureAwait(false);
        IReadOnlyList<string> files = target.Write(result);
        if (cli.SaveLatents is not null)
        {
            new SafetensorsWriter()
                .Add("latents", result.FinalLatents!, plan.NumImages, pipeline.Autoencoder.Config.ZChannels, plan.LatentHeight, plan.LatentWidth)
                .Write(cli.SaveLatents);
            console.Note($"latents  {cli.SaveLatents} (final, before decoding)");
        }

        GenerationTimings t = result.Timings;
        console.Note(request.InitialLatents is null
            ? $"seed     {plan.Seed}{(plan.NumImages > 1 ? $" (image k: {plan.Seed} + k)" : string.Empty)}"
            : "seed     none (latents given)");
        console.Note(FormattableString.Invariant(
            $"timings  prepare {t.Prepare.TotalMilliseconds:F0} ms, denoise {t.Denoise.TotalMilliseconds:F0} ms ({t.StepsPerSecond:F2} it/s), decode {t.Decode.TotalMilliseconds:F0} ms, encode {t.Encode.TotalMilliseconds:F0} ms, total {t.Total.TotalMilliseconds:F0} ms"));
        if (plan.StepCache is not null)
        {
            console.Note(FormattableString.Invariant(
                $"speed    {SpeedModes.Name(plan.SpeedMode)}: {result.BlocksComputed} of {result.BlocksTotal} transformer blocks ran ({result.BlocksComputedShare:P1}), {result.CachedSteps} image-steps reused"));
        }

        if (cli.Json)
        {
            console.Out.WriteLine(Json(result, files, cli.SaveLatents, request.InitialLatents is null).ToJsonString(JsonOutput));
        }
        else
        {
            foreach (string file in files)
            {
                console.Out.WriteLine(file);
            }
        }

        return new GenerateReport(result, files);
    }

    /// <summary>The result for machines: the files with their seeds, the plan, the timings in milliseconds, the warnings.</summary>
    private static JsonObject Json(GenerationResult result, IReadOnlyList<string> files, string? latents, bool seeded)
    {
        GenerationPlan plan = result.Plan;
        GenerationTimings t = result.Timings;
        var images = new JsonArray();
        for (int k = 0; k < files.Count; k++)
        {
            GeneratedImage image = result.Images[k];
            images.Add(new JsonObject
            {
                ["path"] = files[k],
                ["width"] = image.Width,
                ["height"] = image.Height,
                ["format"] = Images.Extension(image.Format),
                ["seed"] = image.Seed,
            });
        }

        return new JsonObject
        {
            ["images"] = images,
            ["seed"] = seeded ? plan.Seed : null,
            ["width"] = plan.Width,
            ["height"] = plan.Height,
            ["steps"] = plan.Steps,
            ["guidance"] = plan.Guidance,
            ["strength"] = plan.Strength,
            ["start_step"] = plan.StartStep,
            ["latents"] = latents,
            ["warnings"] = new JsonArray([.. plan.Warnings.Select(w => (JsonNode?)JsonValue.Create(w))]),
            ["timings_ms"] = new JsonObject
            {
                ["prepare"] = Math.Round(t.Prepare.TotalMilliseconds, 3),
                ["denoise"] = Math.Round(t.Denoise.TotalMilliseconds, 3),
                ["decode"] = Math.Round(t.Decode.TotalMilliseconds, 3),
                ["encode"] = Math.Round(t.Encode.TotalMilliseconds, 3),
                ["total"] = Math.Round(t.Total.TotalMilliseconds, 3),
            },
            ["steps_per_second"] = Math.Round(t.StepsPerSecond, 4),
            ["speed_mode"] = SpeedModes.Name(plan.SpeedMode),
            ["blocks_computed"] = result.BlocksComputed,
            ["blocks_total"] = result.BlocksTotal,
        };
    }

    private static RgbImage ReadImage(string path)
    {
        try
        {
            return Images.Decode(File.ReadAllBytes(path), out _);
        }
        catch (FluxNativeException e)
        {
            throw new CliInputException($"--image {path}: not a PNG, JPEG or WebP image the decoder can read ({e.Message}).");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliInputException($"--image {path}: {e.Message}");
        }
    }

    private static float[] ReadLatents(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        TensorInfo info = file.Find("latents") ?? throw new CliInputException($"--latents {path}: no tensor 'latents' [N, 16, h, w].");
        if (info.Shape.Count != 4)
        {
            throw new CliInputException($"--latents {path}: latents has shape [{string.Join(", ", info.Shape)}]; expected [N, 16, h, w].");
        }

        return file.ReadFloat32("latents");
    }

    private static PromptEmbeddings ReadEmbeddings(string path)
    {
        using Checkpoint file = Checkpoint.Open(path);
        TensorInfo txt = file.Find("txt") ?? throw new CliInputException($"--prompt-embeds {path}: no tensor 'txt' [B, L, 4096].");
        TensorInfo y = file.Find("y") ?? throw new CliInputException($"--prompt-embeds {path}: no tensor 'y' [B, 768].");
        if (txt.Shape.Count != 3 || y.Shape.Count != 2 || txt.Shape[0] != y.Shape[0])
        {
            throw new CliInputException(
                $"--prompt-embeds {path}: txt is [{string.Join(", ", txt.Shape)}] and y is [{string.Join(", ", y.Shape)}]; expected txt [B, L, 4096] and y [B, 768] with the same B.");
        }

        return new PromptEmbeddings(file.ReadFloat32("txt"), file.ReadFloat32("y"), checked((int)txt.Shape[0]), checked((int)txt.Shape[1]));
    }
}
