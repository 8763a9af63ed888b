using System.Text.Json.Nodes;

namespace FluxNative.Cli;

/// <summary>One checkpoint of a whole model folder: its name there (<c>transformer</c>, <c>ae.safetensors</c>) and path.</summary>
internal sealed record ModelPart(string Name, string Path);

/// <summary>
/// A folder holding a whole model rather than one checkpoint: a diffusers folder (<c>model_index.json</c>,
/// <c>transformer/</c>, <c>vae/</c>, <c>text_encoder/</c>, <c>text_encoder_2/</c>, tokenizers) or a folder of BFL
/// files (<c>flux1-dev.safetensors</c>, <c>ae.safetensors</c>, ...).
/// </summary>
/// <param name="Path">The folder.</param>
/// <param name="Diffusers">Whether it is laid out as diffusers (else: a set of BFL files and component folders).</param>
/// <param name="Parts">The checkpoints in it, the diffusers components first in pipeline order.</param>
/// <param name="Tokenizers">Tokenizer folders found, by name (<c>tokenizer</c>: CLIP, <c>tokenizer_2</c>: T5).</param>
/// <param name="Missing">The diffusers components a FLUX pipeline needs that the folder lacks.</param>
internal sealed record ModelFolder(string Path, bool Diffusers, IReadOnlyList<ModelPart> Parts, IReadOnlyList<string> Tokenizers, IReadOnlyList<string> Missing);

/// <summary><c>flux inspect FOLDER</c> on a whole model: every part described, one after the other.</summary>
internal static class ModelFolderReport
{
    /// <summary>The components of a FLUX diffusers folder, in pipeline order.</summary>
    public static readonly string[] DiffusersComponents = ["transformer", "vae", "text_encoder", "text_encoder_2"];

    private static readonly (string Folder, string Tokenizer)[] DiffusersTokenizers = [("tokenizer", "CLIP"), ("tokenizer_2", "T5")];

    /// <summary>
    /// The parts of <paramref name="path"/> when it is a whole model folder; null when it is one checkpoint (a file,
    /// a component folder with its config.json or index, a folder with one .safetensors file) or nothing recognisable.
    /// </summary>
    public static ModelFolder? FindParts(string path)
    {
        if (!Directory.Exists(path))
        {
            return null;
        }

        var parts = new List<ModelPart>();
        foreach (string component in DiffusersComponents)
        {
            string folder = System.IO.Path.Combine(path, component);
            if (HoldsWeights(folder))
            {
                parts.Add(new ModelPart(component, folder));
            }
        }

        bool diffusers = parts.Count > 0 || File.Exists(System.IO.Path.Combine(path, "model_index.json"));
        if (!diffusers && IsOneCheckpoint(path))
        {
            return null;
        }

        IEnumerable<string> others = Directory.EnumerateFiles(path, "*.safetensors")
            .Concat(Directory.EnumerateDirectories(path).Where(d => !DiffusersComponents.Contains(System.IO.Path.GetFileName(d)) && HoldsWeights(d)))
            .Order(StringComparer.Ordinal);
        parts.AddRange(others.Select(p => new ModelPart(System.IO.Path.GetFileName(p), p)));
        if (parts.Count == 0)
        {
            return null;   // nothing to describe: Checkpoint.Open says what is wrong with the folder
        }

        string[] tokenizers = [.. DiffusersTokenizers.Select(t => t.Folder).Where(t => Directory.Exists(System.IO.Path.Combine(path, t)))];
        string[] missing = diffusers ? [.. DiffusersComponents.Where(c => parts.All(p => p.Name != c))] : [];
        return new ModelFolder(path, diffusers, parts, tokenizers, missing);
    }

    public static void Inspect(ModelFolder folder, bool json, bool listTensors, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var checkpoints = new List<(ModelPart Part, Checkpoint Checkpoint)>();
        try
        {
            foreach (ModelPart part in folder.Parts)
            {
                checkpoints.Add((part, Checkpoint.Open(part.Path)));
            }

            if (json)
            {
                output.WriteLine(Json(folder, checkpoints, listTensors));
                return;
            }

            WriteSummary(folder, [.. checkpoints.Select(c => (c.Part, c.Checkpoint.Describe()))], output);
            foreach ((ModelPart part, Checkpoint checkpoint) in checkpoints)
            {
                output.WriteLine();
                CheckpointReport.WriteSummary(part.Path, checkpoint.Describe(), output);
                if (listTensors)
                {
                    output.WriteLine();
                    CheckpointReport.WriteTensors(checkpoint.Tensors, output);
                }
            }
        }
        finally
        {
            foreach ((_, Checkpoint checkpoint) in checkpoints)
            {
                checkpoint.Dispose();
            }
        }
    }

    /// <summary>The overview: what the folder is, one line per part, the tokenizers and what is missing.</summary>
    private static void WriteSummary(ModelFolder folder, IReadOnlyList<(ModelPart Part, CheckpointDescription Description)> parts, TextWriter output)
    {
        long parameters = parts.Sum(p => p.Description.ParameterCount);
        string? variant = parts.Select(p => p.Description).FirstOrDefault(d => d.Kind == ModelKind.FluxTransformer)?.Variant;
        output.WriteLine(folder.Path);
        Field(output, "model", $"FLUX.1{(variant is null ? string.Empty : $" [{variant}]")}, {(folder.Diffusers ? "diffusers folder" : "folder of BFL files")}");
        Field(output, "parameters", $"{CheckpointReport.FormatCount(parameters)} in {parts.Count} part(s)");
        int nameWidth = parts.Max(p => DisplayName(p.Part).Length);
        output.WriteLine("  parts");
        foreach ((ModelPart part, CheckpointDescription d) in parts)
        {
            string what = CheckpointReport.KindName(d.Kind) + (d.Variant is { Length: > 0 } v ? $" ({v})" : string.Empty);
            string dtypes = string.Join(", ", d.DTypes.OrderByDescending(t => t.Value).Select(t => t.Key));
            string problems = d.Problems.Count == 0 ? string.Empty : $", {d.Problems.Count} problem(s)";
            output.WriteLine($"    {DisplayName(part).PadRight(nameWidth)}  {what}, {CheckpointReport.FormatCount(d.ParameterCount)}, {dtypes}{problems}");
        }

        if (folder.Diffusers)
        {
            Field(output, "tokenizers", folder.Tokenizers.Count == 0
                ? "none"
                : string.Join(", ", DiffusersTokenizers.Where(t => folder.Tokenizers.Contains(t.Folder)).Select(t => $"{t.Folder}/ ({t.Tokenizer})")));
            Field(output, "missing", folder.Missing.Count == 0 ? "none" : string.Join(", ", folder.Missing.Select(m => m + "/")));
        }
    }

    private static string Json(ModelFolder folder, IReadOnlyList<(ModelPart Part, Checkpoint Checkpoint)> checkpoints, bool listTensors)
    {
        var parts = new JsonObject();
        foreach ((ModelPart part, Checkpoint checkpoint) in checkpoints)
        {
            string description = listTensors ? CheckpointReport.DescribeWithTensors(checkpoint) : checkpoint.DescribeJson();
            parts[part.Name] = JsonNode.Parse(description);
        }

        var document = new JsonObject
        {
            ["path"] = folder.Path,
            ["kind"] = "model_folder",
            ["layout"] = folder.Diffusers ? "diffusers" : "bfl",
            ["parameter_count"] = checkpoints.Sum(c => c.Checkpoint.Describe().ParameterCount),
            ["parts"] = parts,
            ["tokenizers"] = new JsonArray([.. folder.Tokenizers.Select(t => (JsonNode?)JsonValue.Create(t))]),
            ["missing"] = new JsonArray([.. folder.Missing.Select(m => (JsonNode?)JsonValue.Create(m))]),
        };
        return document.ToJsonString();
    }

    private static string DisplayName(ModelPart part) => Directory.Exists(part.Path) ? part.Name + "/" : part.Name;

    private static void Field(TextWriter output, string label, string value) => output.WriteLine($"  {label,-12}{value}");

    /// <summary>A folder <see cref="Checkpoint.Open"/> reads as one checkpoint: with a config.json or an index, or one weight file.</summary>
    private static bool IsOneCheckpoint(string folder) =>
        File.Exists(System.IO.Path.Combine(folder, "config.json"))
        || Directory.EnumerateFiles(folder, "*.safetensors.index.json").Any()
        || Directory.EnumerateFiles(folder, "*.safetensors").Take(2).Count() == 1;

    private static bool HoldsWeights(string folder) =>
        Directory.Exists(folder)
        && (Directory.EnumerateFiles(folder, "*.safetensors").Any() || Directory.EnumerateFiles(folder, "*.safetensors.index.json").Any());
}
