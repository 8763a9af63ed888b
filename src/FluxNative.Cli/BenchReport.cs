using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Cli;

/// <summary>
/// <c>flux bench</c>'s reports: a table for people (standard output, and markdown with <c>--markdown</c>), JSON for
/// machines (<c>--json</c>, format <see cref="Format"/>), and <c>--compare a.json b.json</c>, the ratios of two.
/// </summary>
internal static class BenchReport
{
    /// <summary>The JSON report's format name; a report of another format is refused by <c>--compare</c>.</summary>
    public const string Format = "fluxnative-bench/1";

    /// <summary>The stages, in the order a generation runs them: the JSON key and the name people read.</summary>
    public static readonly (string Key, string Name)[] Stages =
    [
        ("tokenize", "tokenize"),
        ("text_encode", "text encoders (incl. tokenize)"),
        ("prepare", "prepare (until the first step)"),
        ("step", "one denoising step"),
        ("denoise", "all denoising steps"),
        ("decode", "autoencoder decode"),
        ("image_encode", "image file encode"),
        ("total", "request total"),
    ];

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true, Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Median, min and max in milliseconds of one stage over the timed runs (every step of every run for <c>step</c>).</summary>
    public static (double Median, double Min, double Max) Stage(BenchResult result, string key)
    {
        ArgumentNullException.ThrowIfNull(result);
        double[] values = key == "step"
            ? [.. result.Runs.SelectMany(r => r.StepMilliseconds)]
            : [.. result.Runs.Select(r => Milliseconds(r.Timings, key))];
        return values.Length == 0 ? (0, 0, 0) : (Median(values), values.Min(), values.Max());
    }

    public static double StepsPerSecond(BenchResult result)
    {
        double denoise = Stage(result, "denoise").Median;
        return denoise > 0 ? result.Plan.StepsToRun / (denoise / 1000) : 0;
    }

    public static double ImagesPerSecond(BenchResult result)
    {
        double total = Stage(result, "total").Median;
        return total > 0 ? result.Plan.NumImages / (total / 1000) : 0;
    }

    public static JsonObject Json(BenchResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        BenchRequest request = result.Request;
        MachineDescription machine = result.Machine;
        var stages = new JsonObject();
        foreach (var (key, _) in Stages)
        {
            var (median, min, max) = Stage(result, key);
            stages[key] = new JsonObject { ["median"] = Round(median), ["min"] = Round(min), ["max"] = Round(max) };
        }

        var runs = new JsonArray();
        foreach (BenchRun run in result.Runs)
        {
            var stagesOfRun = new JsonObject();
            foreach (var (key, _) in Stages)
            {
                if (key != "step")
                {
                    stagesOfRun[key] = Round(Milliseconds(run.Timings, key));
                }
            }

            stagesOfRun["steps"] = new JsonArray([.. run.StepMilliseconds.Select(s => (JsonNode?)JsonValue.Create(Round(s)))]);
            stagesOfRun["peak_batch_images"] = run.PeakBatchImages;
            stagesOfRun["blocks_computed_share"] = Math.Round(run.BlocksComputedShare, 5);
            runs.Add(stagesOfRun);
        }

        return new JsonObject
        {
            ["format"] = Format,
            ["created"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture),
            ["machine"] = new JsonObject
            {
                ["cpu"] = machine.Cpu,
                ["logical_cores"] = machine.LogicalCores,
                ["memory_bytes"] = machine.MemoryBytes,
                ["cpu_features"] = machine.CpuFeatures,
                ["os"] = machine.Os,
                ["runtime"] = machine.Runtime,
                ["cuda"] = machine.Cuda,
                ["gpu"] = machine.Gpu,
            },
            ["software"] = new JsonObject
            {
                ["flux"] = machine.FluxVersion,
                ["commit"] = machine.Commit,
                ["library"] = machine.LibraryVersion,
            },
            ["settings"] = new JsonObject
            {
                ["source"] = request.Source,
                ["model"] = request.ModelName,
                ["transformer"] = result.ModelSummary,
                ["device"] = machine.Device,
                ["width"] = result.Plan.Width,
                ["height"] = result.Plan.Height,
                ["steps"] = result.Plan.Steps,
                ["batch"] = result.Plan.NumImages,
                ["guidance"] = result.Plan.Guidance,
                ["t5_max_length"] = request.Options.T5MaxLength == 0 ? null : request.Options.T5MaxLength,
                ["weights"] = TransformerForward.WeightFormatNames[(int)request.Options.TransformerWeights],
                ["activations"] = TransformerForward.ActivationPrecisionNames[(int)request.Options.Activations],
                ["threads"] = request.Options.Threads,
                ["image_format"] = Images.Extension(result.Plan.Format),
                ["speed_mode"] = SpeedModes.Name(request.SpeedMode),
                ["warmup"] = request.Warmup,
                ["runs"] = request.Runs,
                ["prompt"] = request.Prompt,
            },
            ["load_s"] = Math.Round(result.Load.TotalSeconds, 3),
            ["synthetic_write_s"] = result.SyntheticWrite is { } write ? Math.Round(write.TotalSeconds, 3) : null,
            ["stages_ms"] = stages,
            ["steps_per_s"] = Math.Round(StepsPerSecond(result), 4),
            ["images_per_s"] = Math.Round(ImagesPerSecond(result), 5),
            ["memory"] = new JsonObject
            {
                ["peak_host_bytes"] = result.PeakHostBytes,
                ["host_bytes_after_load"] = result.HostBytesAfterLoad,
                // The arenas' peak on the GPU (what FluxNative allocated; cuBLASLt's and the CUDA context's own memory are not in it).
                ["peak_device_bytes"] = result.PeakDeviceBytes,
            },
            ["runs_ms"] = runs,
        };
    }

    public static string JsonText(BenchResult result) => Json(result).ToJsonString(Indented) + "\n";

    /// <summary>The report for people: what ran, where, and the stage table (markdown, which reads as plain text too).</summary>
    public static string Markdown(BenchResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        MachineDescription m = result.Machine;
        var text = new StringBuilder();
        Line(text, $"# flux bench: {result.Plan.Width}x{result.Plan.Height}, {result.Plan.Steps} steps, batch {result.Plan.NumImages}, {m.Device}");
        text.AppendLine();
        Line(text, $"- model: {result.Request.ModelName} ({result.ModelSummary}); weights {TransformerForward.WeightFormatNames[(int)result.Request.Options.TransformerWeights]}, activations {TransformerForward.ActivationPrecisionNames[(int)result.Request.Options.Activations]}");
        Line(text, $"- machine: {m.Cpu}, {m.LogicalCores} logical cores, {Bytes(m.MemoryBytes)} memory; CPU features {m.CpuFeatures}; {m.Os}; {m.Runtime}");
        Line(text, $"- CUDA: {m.Cuda ?? "not in this library"}{(m.Gpu is null ? string.Empty : $"; ran on {m.Gpu}")}");
        Line(text, $"- software: flux {m.FluxVersion}, libfluxnative {m.LibraryVersion}");
        Line(text, $"- runs: {result.Request.Warmup} warm-up, {result.Runs.Count} timed; the prompt cache is off (each run encodes its prompt)");
        double share = result.Runs.Count > 0 ? result.Runs.Average(r => r.BlocksComputedShare) : 1;
        Line(text, $"- speed mode: {SpeedModes.Name(result.Request.SpeedMode)}; transformer blocks run {share * 100:F1} % (step caching reuses the rest)");
        Line(text, $"- load: {result.Load.TotalSeconds:F2} s{(result.SyntheticWrite is { } w ? $" (after writing the synthetic weights: {w.TotalSeconds:F1} s)" : string.Empty)}");
        string device = result.PeakDeviceBytes is long peak
            ? $"peak on the GPU {Bytes(peak)} (FluxNative's arenas; the CUDA context and cuBLASLt's own memory not counted)"
            : "no GPU";
        Line(text, $"- memory: peak resident {Bytes(result.PeakHostBytes)} (after load {Bytes(result.HostBytesAfterLoad)}); {device}");
        text.AppendLine();
        Line(text, $"| stage | median ms | min ms | max ms |");
        Line(text, $"|---|---:|---:|---:|");
        foreach (var (key, name) in Stages)
        {
            var (median, min, max) = Stage(result, key);
            text.AppendLine($"| {name} | {Milliseconds(median)} | {Milliseconds(min)} | {Milliseconds(max)} |");
        }

        text.AppendLine();
        Line(text, $"**{StepsPerSecond(result):F3} steps/s, {ImagesPerSecond(result):F4} images/s** (medians; images/s counts whole requests, prompt to file)");
        return text.ToString();
    }

    /// <summary>
    /// <c>flux bench --compare a.json b.json</c>: the settings that differ, then each figure of both and the ratio b/a
    /// (for times below 1 means b is faster; for rates above 1).
    /// </summary>
    public static string Compare(string pathA, string pathB)
    {
        JsonObject a = Read(pathA), b = Read(pathB);
        var text = new StringBuilder();
        Line(text, $"a: {pathA} ({a["machine"]?["cpu"]}, {a["settings"]?["device"]}, commit {a["software"]?["commit"] ?? "unknown"})");
        Line(text, $"b: {pathB} ({b["machine"]?["cpu"]}, {b["settings"]?["device"]}, commit {b["software"]?["commit"] ?? "unknown"})");
        var differences = new List<string>();
        foreach (string section in new[] { "settings", "machine" })
        {
            if (a[section] is JsonObject sa && b[section] is JsonObject sb)
            {
                foreach (string key in sa.Select(p => p.Key).Union(sb.Select(p => p.Key)))
                {
                    string va = sa[key]?.ToJsonString() ?? "null", vb = sb[key]?.ToJsonString() ?? "null";
                    if (va != vb)
                    {
                        differences.Add($"  {section}.{key}: {va} -> {vb}");
                    }
                }
            }
        }

        text.AppendLine(differences.Count == 0 ? "same settings and machine" : "differences:");
        foreach (string d in differences)
        {
            text.AppendLine(d);
        }

        text.AppendLine();
        Line(text, $"| figure | a | b | b/a |");
        Line(text, $"|---|---:|---:|---:|");
        Row(text, "load s", a["load_s"], b["load_s"]);
        foreach (var (key, name) in Stages)
        {
            Row(text, $"{name} ms", a["stages_ms"]?[key]?["median"], b["stages_ms"]?[key]?["median"]);
        }

        Row(text, "steps/s", a["steps_per_s"], b["steps_per_s"]);
        Row(text, "images/s", a["images_per_s"], b["images_per_s"]);
        Row(text, "peak host bytes", a["memory"]?["peak_host_bytes"], b["memory"]?["peak_host_bytes"]);
        Row(text, "peak device bytes", a["memory"]?["peak_device_bytes"], b["memory"]?["peak_device_bytes"]);
        return text.ToString();
    }

    private static JsonObject Read(string path)
    {
        JsonNode? node;
        try
        {
            node = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw new CliInputException($"--compare {path}: not JSON ({e.Message})");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliInputException($"--compare {path}: {e.Message}");
        }

        if (node is not JsonObject report || report["format"]?.GetValueKind() != JsonValueKind.String || (string?)report["format"] != Format)
        {
            throw new CliInputException($"--compare {path}: not a flux bench report (format {Format}; write one with flux bench --json FILE)");
        }

        return report;
    }

    private static void Row(StringBuilder text, string name, JsonNode? a, JsonNode? b)
    {
        double? va = Number(a), vb = Number(b);
        string ratio = va is > 0 && vb is not null ? (vb.Value / va.Value).ToString("F3", CultureInfo.InvariantCulture) : "-";
        Line(text, $"| {name} | {Show(va)} | {Show(vb)} | {ratio} |");
    }

    private static double? Number(JsonNode? node) =>
        node is JsonValue value && value.GetValueKind() == JsonValueKind.Number ? value.GetValue<double>() : null;

    private static string Show(double? value) => value is double v ? v.ToString("0.###", CultureInfo.InvariantCulture) : "-";

    private static double Milliseconds(GenerationTimings t, string key) => key switch
    {
        "tokenize" => t.Tokenization.TotalMilliseconds,
        "text_encode" => t.TextEncoding.TotalMilliseconds,
        "prepare" => t.Prepare.TotalMilliseconds,
        "denoise" => t.Denoise.TotalMilliseconds,
        "decode" => t.Decode.TotalMilliseconds,
        "image_encode" => t.Encode.TotalMilliseconds,
        "total" => t.Total.TotalMilliseconds,
        _ => throw new ArgumentOutOfRangeException(nameof(key), key, "not a stage"),
    };

    private static double Median(double[] values)
    {
        double[] sorted = [.. values.Order()];
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[(n / 2) - 1] + sorted[n / 2]) / 2;
    }

    /// <summary>Three significant figures at least, so that a 0.04 ms stage does not read as 0.</summary>
    private static string Milliseconds(double value) =>
        value.ToString(value >= 100 ? "F1" : value >= 1 ? "F2" : "F3", CultureInfo.InvariantCulture);

    private static double Round(double milliseconds) => Math.Round(milliseconds, 3);

    private static string Bytes(long? bytes) => bytes is long b
        ? b >= 1L << 30 ? string.Create(CultureInfo.InvariantCulture, $"{b / (double)(1L << 30):F2} GiB") : string.Create(CultureInfo.InvariantCulture, $"{b / (double)(1L << 20):F0} MiB")
        : "unknown";

    private static void Line(StringBuilder text, FormattableString line) => text.AppendLine(FormattableString.Invariant(line));
}
