// Runs every speed mode (and optional step-cache thresholds) through FluxPipeline on the same seeds and prompt
// embeddings, one request at a time, and writes a Markdown report: per mode the share of transformer blocks that
// ran, the denoising time per image and its ratio to lossless, and the quality cost against lossless (relative L2 of
// the final latents, PSNR of the decoded 8-bit image). See README.md beside this file.
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text;
using FluxNative;

var options = BenchmarkOptions.Parse(args);
using FluxTransformer transformer = FluxTransformer.Load(options.Transformer, options.WeightFormat);
using Autoencoder autoencoder = Autoencoder.Load(options.Autoencoder);
using var pipeline = new FluxPipeline(transformer, autoencoder, new FluxPipelineOptions(), ownsModels: false);
FluxTransformerConfig config = transformer.Config;
int blocksPerStep = config.Depth + config.DepthSingle;

var variants = new List<(string Name, SpeedMode Mode, StepCacheOptions? Cache)>();
foreach (SpeedMode mode in Enum.GetValues<SpeedMode>())
{
    variants.Add((SpeedModes.Name(mode), mode, null));
}

foreach (double threshold in options.Thresholds)
{
    var cache = (StepCacheOptions.For(SpeedMode.Fastest) ?? new StepCacheOptions()) with { Threshold = threshold };
    variants.Add((FormattableString.Invariant($"fastest, threshold {threshold}"), SpeedMode.Fastest, cache));
}

// Lossless once more at the end: its spread from the first lossless run is the timing noise of the machine.
variants.Add(("lossless, again", SpeedMode.Lossless, null));

// Warm-up: one short run, so the first measured one does not pay for JIT and first-touch allocation.
await pipeline.GenerateAsync(Request(options, config, options.Seeds[0], SpeedMode.Lossless, null) with { Steps = 2 });

var rows = new List<Row>();
var reference = new Dictionary<long, GenerationResult>();
foreach ((string name, SpeedMode mode, StepCacheOptions? cache) in variants)
{
    var row = new Row(name);
    foreach (long seed in options.Seeds)
    {
        var clock = Stopwatch.StartNew();
        GenerationResult result = await pipeline.GenerateAsync(Request(options, config, seed, mode, cache));
        clock.Stop();
        if (mode == SpeedMode.Lossless && cache is null && !reference.ContainsKey(seed))
        {
            reference[seed] = result;
        }

        GenerationResult lossless = reference[seed];
        row.Add(result, lossless, clock.Elapsed);
        Console.Error.WriteLine(FormattableString.Invariant(
            $"{name,-26} seed {seed}: blocks {result.BlocksComputed}/{result.BlocksTotal}, denoise {result.Timings.Denoise.TotalSeconds:F2} s, rel. L2 {RelativeL2(result.FinalLatents!, lossless.FinalLatents!):E2}, PSNR {Psnr(result.Images[0].Rgb.Span, lossless.Images[0].Rgb.Span):F1} dB"));
    }

    rows.Add(row);
}

string report = Report(options, config, blocksPerStep, rows);
File.WriteAllText(options.Output, report);
Console.Error.WriteLine($"wrote {options.Output}");
return 0;

static GenerationRequest Request(BenchmarkOptions options, FluxTransformerConfig config, long seed, SpeedMode mode, StepCacheOptions? cache) => new()
{
    PromptEmbeddings = DemoModels.RandomEmbeddings(config, seed, options.TextTokens),
    Width = options.Size,
    Height = options.Size,
    Steps = options.Steps,
    Guidance = 3.5,
    Seed = seed,
    ReturnLatents = true,
    WriteMetadata = false,
    SpeedMode = mode,
    StepCache = cache,
};

static double RelativeL2(float[] got, float[] want)
{
    double num = 0, den = 0;
    for (int i = 0; i < want.Length; i++)
    {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
    }

    return Math.Sqrt(num / den);
}

static double Psnr(ReadOnlySpan<byte> got, ReadOnlySpan<byte> want)
{
    double sum = 0;
    for (int i = 0; i < want.Length; i++)
    {
        double d = got[i] - want[i];
        sum += d * d;
    }

    double mse = sum / want.Length;
    return mse == 0 ? double.PositiveInfinity : 10 * Math.Log10(255.0 * 255.0 / mse);
}

static string Report(BenchmarkOptions options, FluxTransformerConfig config, int blocksPerStep, List<Row> rows)
{
    var s = new StringBuilder();
    var inv = CultureInfo.InvariantCulture;
    s.AppendLine(inv, $"## {options.Label}");
    s.AppendLine();
    s.AppendLine(inv, $"- model: `{Path.GetFileName(options.Transformer)}`, hidden {config.HiddenSize}, {config.NumHeads} heads, {config.Depth} double + {config.DepthSingle} single blocks ({blocksPerStep} a step), weights {options.WeightFormat}; random weights (see the note on random weights)");
    s.AppendLine(inv, $"- request: {options.Size}x{options.Size} ({options.Size / 16 * (options.Size / 16)} image tokens), {options.TextTokens} text tokens (random embeddings), {options.Steps} steps, guidance 3.5, seeds {string.Join(", ", options.Seeds)}, one image a request, one request at a time");
    s.AppendLine(inv, $"- machine: {Environment.ProcessorCount} CPUs, {RuntimeInformation.OSDescription}, {RuntimeInformation.ProcessArchitecture}");
    s.AppendLine(inv, $"- date: {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC");
    s.AppendLine();
    s.AppendLine("| mode | blocks run | reused image-steps | blocks run at FLUX.1 depth (57) | denoise s / image | time vs lossless | rel. L2 of final latents vs lossless (mean, max) | PSNR vs lossless, dB (mean, min) |");
    s.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|");
    double losslessTime = rows[0].DenoiseSeconds;
    foreach (Row r in rows)
    {
        // At FLUX.1's 57 blocks a step, with the same reuse pattern: a reused step runs only head + tail blocks.
        double full = r.Steps - r.Reused, share57 = (full * 57 + r.Reused * r.HeadTail) / (r.Steps * 57.0);
        s.AppendLine(inv, $"| {r.Name} | {r.Share:P1} | {r.Reused} of {r.Steps} | {share57:P1} | {r.DenoiseSeconds:F2} | {r.DenoiseSeconds / losslessTime:F2}x | {r.MeanL2:E2}, {r.MaxL2:E2} | {Fmt(r.MeanPsnr)}, {Fmt(r.MinPsnr)} |");
    }

    s.AppendLine();
    return s.ToString();

    static string Fmt(double psnr) => double.IsPositiveInfinity(psnr) ? "∞ (identical)" : psnr.ToString("F1", CultureInfo.InvariantCulture);
}

internal sealed class Row(string name)
{
    private readonly List<double> l2 = [], psnr = [], denoise = [];

    public string Name { get; } = name;

    public long Blocks { get; private set; }

    public long Total { get; private set; }

    public int Reused { get; private set; }

    public int Steps { get; private set; }

    public int HeadTail { get; private set; }

    public double Share => (double)Blocks / Total;

    public double DenoiseSeconds => denoise.Average();

    public double MeanL2 => l2.Average();

    public double MaxL2 => l2.Max();

    public double MeanPsnr => psnr.Any(double.IsPositiveInfinity) ? double.PositiveInfinity : psnr.Average();

    public double MinPsnr => psnr.Min();

    public void Add(GenerationResult result, GenerationResult lossless, TimeSpan wall)
    {
        _ = wall;
        Blocks += result.BlocksComputed;
        Total += result.BlocksTotal;
        Reused += result.CachedSteps;
        Steps += result.Plan.StepsToRun * result.Plan.NumImages;
        HeadTail = result.Plan.StepCache is { } c ? c.HeadBlocks + c.TailBlocks : 0;
        denoise.Add(result.Timings.Denoise.TotalSeconds);
        double d = 0, n = 0;
        for (int i = 0; i < lossless.FinalLatents!.Length; i++)
        {
            double e = (double)result.FinalLatents![i] - lossless.FinalLatents[i];
            d += e * e;
            n += (double)lossless.FinalLatents[i] * lossless.FinalLatents[i];
        }

        l2.Add(Math.Sqrt(d / n));
        ReadOnlySpan<byte> a = result.Images[0].Rgb.Span, b = lossless.Images[0].Rgb.Span;
        double sum = 0;
        for (int i = 0; i < a.Length; i++)
        {
            sum += (a[i] - b[i]) * (a[i] - b[i]);
        }

        psnr.Add(sum == 0 ? double.PositiveInfinity : 10 * Math.Log10(255.0 * 255.0 * a.Length / sum));
    }
}

internal sealed record BenchmarkOptions
{
    public required string Transformer { get; init; }
    public required string Autoencoder { get; init; }
    public required string Output { get; init; }
    public string Label { get; init; } = "speed modes";
    public int Size { get; init; } = 256;
    public int Steps { get; init; } = 28;
    public int TextTokens { get; init; } = 64;
    public long[] Seeds { get; init; } = [1, 2];
    public double[] Thresholds { get; init; } = [];
    public FluxWeightFormat WeightFormat { get; init; } = FluxWeightFormat.AsStored;

    public static BenchmarkOptions Parse(string[] args)
    {
        var values = new Dictionary<string, string>(StringComparer.Ordinal);
        for (int i = 0; i + 1 < args.Length; i += 2)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal))
            {
                throw new ArgumentException($"Expected --name value pairs; got '{args[i]}'.");
            }

            values[args[i][2..]] = args[i + 1];
        }

        if (args.Length % 2 != 0)
        {
            throw new ArgumentException($"'{args[^1]}' has no value.");
        }

        string Required(string name) => values.TryGetValue(name, out string? v) ? v : throw new ArgumentException($"--{name} is required.");
        var inv = CultureInfo.InvariantCulture;
        return new BenchmarkOptions
        {
            Transformer = Required("transformer"),
            Autoencoder = Required("ae"),
            Output = Required("out"),
            Label = values.GetValueOrDefault("label", "speed modes"),
            Size = values.TryGetValue("size", out string? size) ? int.Parse(size, inv) : 256,
            Steps = values.TryGetValue("steps", out string? steps) ? int.Parse(steps, inv) : 28,
            TextTokens = values.TryGetValue("text-tokens", out string? tokens) ? int.Parse(tokens, inv) : 64,
            Seeds = values.TryGetValue("seeds", out string? seeds) ? [.. seeds.Split(',').Select(x => long.Parse(x, inv))] : [1, 2],
            Thresholds = values.TryGetValue("thresholds", out string? t) ? [.. t.Split(',').Select(x => double.Parse(x, inv))] : [],
            WeightFormat = values.TryGetValue("weights", out string? w) ? Enum.Parse<FluxWeightFormat>(w, ignoreCase: true) : FluxWeightFormat.AsStored,
        };
    }
}
