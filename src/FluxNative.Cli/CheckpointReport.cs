using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace FluxNative.Cli;

/// <summary><c>flux inspect</c>: what a checkpoint is, for people (text) or machines (JSON).</summary>
internal static class CheckpointReport
{
    public static void Inspect(string path, bool json, bool listTensors, TextWriter output)
    {
        using Checkpoint checkpoint = Checkpoint.Open(path);
        if (json)
        {
            output.WriteLine(listTensors ? DescribeWithTensors(checkpoint) : checkpoint.DescribeJson());
            return;
        }

        WriteSummary(path, checkpoint.Describe(), output);
        if (listTensors)
        {
            output.WriteLine();
            WriteTensors(checkpoint.Tensors, output);
        }
    }

    public static void WriteSummary(string path, CheckpointDescription description, TextWriter output)
    {
        output.WriteLine(path);
        string what = KindName(description.Kind);
        if (description.Variant is { Length: > 0 } variant)
        {
            what += $" ({variant})";
        }

        Field(output, "model", what);
        Field(output, "layout", LayoutName(description.Layout) + (description.KeyPrefix.Length > 0 ? $", names prefixed '{description.KeyPrefix}'" : string.Empty));
        Field(output, "parameters", $"{FormatCount(description.ParameterCount)} ({description.ParameterCount.ToString("N0", CultureInfo.InvariantCulture)})");
        Field(output, "tensors", $"{description.TensorCount}, {FormatBytes(description.TotalBytes)}");
        Field(output, "dtypes", description.DTypes.Count == 0
            ? "none"
            : string.Join(", ", description.DTypes.OrderByDescending(d => d.Value).Select(d => $"{d.Key} x{d.Value}")));
        // A file holding several models (ComfyUI's "all in one"): each one, with the prefix its names carry.
        if (description.Components.Count > 1)
        {
            Field(output, "components", string.Join(", ", description.Components.Select(c => $"{c.Kind} '{c.Prefix}' x{c.TensorCount}")));
        }

        if (description.Engine is { } engine)
        {
            // An engine file (flux build): what it was built as and of, layer dtypes per component.
            string quality = engine.Build.ValueKind == JsonValueKind.Object && engine.Build.TryGetProperty("quality", out JsonElement q)
                ? q.ValueKind == JsonValueKind.Object && q.TryGetProperty("transformer_relative_l2", out JsonElement l2)
                    ? FormattableString.Invariant($", checked: transformer {l2.GetDouble():0.###e0} relative L2 from bf16")
                    : $", {q}"
                : string.Empty;
            Field(output, "engine", $"format {engine.FormatVersion}, {engine.Precision.ToString().ToLowerInvariant()}, packed as {engine.TargetLayout}, built by {engine.Builder}{quality}");
            foreach (FluxEngineComponent c in engine.Components)
            {
                Field(output, string.Empty, $"{c.Name}: {FormatCount(c.ParameterCount)} parameters, layers {string.Join(", ", c.LayerDTypes.Select(d => $"{d.Key} x{d.Value}"))}");
            }
        }

        string source = description.Source.ToString().ToLowerInvariant() + (description.HasConfigJson ? ", with config.json" : string.Empty);
        Field(output, "source", source);
        Field(output, description.Files.Count == 1 ? "file" : "files", description.Files.Count == 0 ? "none" : description.Files[0]);
        foreach (string file in description.Files.Skip(1))
        {
            Field(output, string.Empty, file);
        }

        if (description.Metadata.Count > 0)
        {
            Field(output, "metadata", string.Join(", ", description.Metadata.Select(m => $"{m.Key}={m.Value}")));
        }

        if (description.Config.ValueKind == JsonValueKind.Object)
        {
            // defaults_used is not configuration but a caveat about it: listed on its own below.
            var settings = description.Config.EnumerateObject().Where(p => p.Name != "defaults_used").ToList();
            int keyWidth = settings.Count == 0 ? 0 : settings.Max(p => p.Name.Length);
            output.WriteLine("  config");
            foreach (JsonProperty setting in settings)
            {
                output.WriteLine($"    {setting.Name.PadRight(keyWidth)}  {ConfigValue(setting.Value)}");
            }

            if (description.Config.TryGetProperty("defaults_used", out JsonElement defaults)
                && defaults.ValueKind == JsonValueKind.Array && defaults.GetArrayLength() > 0)
            {
                output.WriteLine("  assumed (not in the checkpoint)");
                foreach (JsonElement assumption in defaults.EnumerateArray())
                {
                    output.WriteLine($"    - {ConfigValue(assumption)}");
                }
            }
        }

        foreach (string note in description.Notes)
        {
            Field(output, "note", note);
        }

        if (description.Problems.Count == 0)
        {
            Field(output, "problems", "none");
        }
        else
        {
            Field(output, "problems", $"{description.Problems.Count}");
            foreach (string problem in description.Problems)
            {
                output.WriteLine($"    - {problem}");
            }
        }
    }

    public static void WriteTensors(IReadOnlyList<TensorInfo> tensors, TextWriter output)
    {
        int nameWidth = tensors.Count == 0 ? 4 : Math.Max(4, tensors.Max(t => t.Name.Length));
        output.WriteLine($"{"name".PadRight(nameWidth)}  {"dtype",-7}  shape");
        foreach (TensorInfo tensor in tensors)
        {
            output.WriteLine($"{tensor.Name.PadRight(nameWidth)}  {tensor.StoredTypeName,-7}  {tensor.ShapeText}");
        }
    }

    public static string KindName(ModelKind kind) => kind switch
    {
        ModelKind.FluxTransformer => "FLUX transformer",
        ModelKind.Autoencoder => "autoencoder (VAE)",
        ModelKind.T5Encoder => "T5 text encoder",
        ModelKind.ClipText => "CLIP text encoder",
        _ => "unknown model",
    };

    public static string LayoutName(CheckpointLayout layout) => layout switch
    {
        CheckpointLayout.Bfl => "BFL",
        CheckpointLayout.Diffusers => "diffusers",
        CheckpointLayout.HuggingFace => "Hugging Face transformers",
        _ => "unknown",
    };

    /// <summary>A count the way model cards write it: 11901408320 is "11.90 B".</summary>
    public static string FormatCount(long count) => count switch
    {
        >= 1_000_000_000 => string.Create(CultureInfo.InvariantCulture, $"{count / 1e9:F2} B"),
        >= 1_000_000 => string.Create(CultureInfo.InvariantCulture, $"{count / 1e6:F2} M"),
        >= 1_000 => string.Create(CultureInfo.InvariantCulture, $"{count / 1e3:F2} K"),
        _ => count.ToString(CultureInfo.InvariantCulture),
    };

    public static string FormatBytes(long bytes) => bytes switch
    {
        >= 1L << 30 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 30):F2} GiB"),
        >= 1L << 20 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 20):F2} MiB"),
        >= 1L << 10 => string.Create(CultureInfo.InvariantCulture, $"{bytes / (double)(1L << 10):F2} KiB"),
        _ => string.Create(CultureInfo.InvariantCulture, $"{bytes} bytes"),
    };

    private static void Field(TextWriter output, string label, string value) => output.WriteLine($"  {label,-12}{value}");

    private static string ConfigValue(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString()!,
        JsonValueKind.Array => $"[{string.Join(", ", value.EnumerateArray().Select(ConfigValue))}]",
        _ => value.GetRawText(),
    };

    /// <summary>The native description with a "tensors" array added, for <c>--json --tensors</c>.</summary>
    public static string DescribeWithTensors(Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        IReadOnlyList<TensorInfo> tensors = checkpoint.Tensors;
        JsonObject document = JsonNode.Parse(checkpoint.DescribeJson())!.AsObject();
        var list = new JsonArray();
        foreach (TensorInfo tensor in tensors)
        {
            list.Add(new JsonObject
            {
                ["name"] = tensor.Name,
                ["dtype"] = tensor.StoredTypeName,
                ["shape"] = new JsonArray(tensor.Shape.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray()),
                ["file"] = tensor.File,
                ["offset"] = tensor.FileOffset,
                ["bytes"] = tensor.ByteSize,
            });
        }

        document["tensors"] = list;
        return document.ToJsonString();
    }
}
