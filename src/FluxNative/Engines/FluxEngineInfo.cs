using System.Text.Json;

namespace FluxNative;

/// <summary>The transformer's precision in an engine file (<c>flux build --precision</c>).</summary>
public enum FluxEnginePrecision
{
    /// <summary>Every linear weight in bf16.</summary>
    Bf16,

    /// <summary>
    /// e4m3 weights with one scale per output channel, except the layers kept in bf16 (the input embedders, every
    /// modulation and the final layer: see <see cref="FluxEngineInfo.Fp8KeptBf16"/>).
    /// </summary>
    Fp8,
}

/// <summary>One model inside an engine.</summary>
/// <param name="Name">"transformer", "t5", "clip" or "autoencoder".</param>
/// <param name="Kind">Its model kind.</param>
/// <param name="Variant">"dev" / "schnell" for the transformer, else null.</param>
/// <param name="ParameterCount">Parameters it holds.</param>
/// <param name="LayerDTypes">Its packed linear layers by dtype ("BF16", "F8_E4M3", "F32") and how many.</param>
/// <param name="Source">The file or folder it was built from.</param>
public sealed record FluxEngineComponent(string Name, ModelKind Kind, string? Variant, long ParameterCount, IReadOnlyDictionary<string, int> LayerDTypes, string? Source);

/// <summary>A file carried inside an engine (the tokenizers), as the U8 tensor <paramref name="Tensor"/>.</summary>
public sealed record FluxEngineFile(string Name, string Tensor, long Bytes);

/// <summary>What an engine file says about itself (the "engine" object of its description; docs/engines.md).</summary>
public sealed record FluxEngineInfo
{
    /// <summary>The engine format version this library reads.</summary>
    public const int SupportedFormatVersion = 1;

    /// <summary>The file format version.</summary>
    public int FormatVersion { get; init; }

    /// <summary>"FluxNative x.y.z" that built it.</summary>
    public string Builder { get; init; } = string.Empty;

    /// <summary>The backend the weights are packed for ("cpu").</summary>
    public string TargetBackend { get; init; } = string.Empty;

    /// <summary>The packing, with its version ("cpu-panels32.v1"); a library with another one refuses the engine.</summary>
    public string TargetLayout { get; init; } = string.Empty;

    /// <summary>The transformer's precision.</summary>
    public FluxEnginePrecision Precision { get; init; }

    /// <summary>T5's linear weights: "as_stored", "bf16" or "fp8".</summary>
    public string T5Precision { get; init; } = "as_stored";

    /// <summary>The transformer layers an FP8 engine keeps in bf16 (patterns: <c>*</c> is any block).</summary>
    public IReadOnlyList<string> Fp8KeptBf16 { get; init; } = [];

    /// <summary>The models it holds.</summary>
    public IReadOnlyList<FluxEngineComponent> Components { get; init; } = [];

    /// <summary>The files it carries.</summary>
    public IReadOnlyList<FluxEngineFile> Files { get; init; } = [];

    /// <summary>What the builder recorded: sources with their SHA-256, the quality check.</summary>
    public JsonElement Build { get; init; }

    /// <summary>The component of <paramref name="kind"/>, or null.</summary>
    public FluxEngineComponent? Component(ModelKind kind) => Components.FirstOrDefault(c => c.Kind == kind);

    /// <summary>Parses the "engine" object of a checkpoint description.</summary>
    public static FluxEngineInfo Parse(JsonElement engine)
    {
        JsonElement target = engine.TryGetProperty("target", out JsonElement t) ? t : default;
        return new FluxEngineInfo
        {
            FormatVersion = engine.TryGetProperty("format_version", out JsonElement v) && v.TryGetInt32(out int version) ? version : 0,
            Builder = Text(engine, "builder") ?? string.Empty,
            TargetBackend = target.ValueKind == JsonValueKind.Object ? Text(target, "backend") ?? string.Empty : string.Empty,
            TargetLayout = target.ValueKind == JsonValueKind.Object ? Text(target, "layout") ?? string.Empty : string.Empty,
            Precision = Text(engine, "precision") == "fp8" ? FluxEnginePrecision.Fp8 : FluxEnginePrecision.Bf16,
            T5Precision = Text(engine, "t5_precision") ?? "as_stored",
            Fp8KeptBf16 = Array(engine, "fp8_kept_bf16").Where(e => e.ValueKind == JsonValueKind.String).Select(e => e.GetString()!).ToList(),
            Components = Array(engine, "components").Select(ParseComponent).ToList(),
            Files = Array(engine, "files")
                .Select(f => new FluxEngineFile(Text(f, "name") ?? string.Empty, Text(f, "tensor") ?? string.Empty,
                    f.TryGetProperty("bytes", out JsonElement b) && b.TryGetInt64(out long n) ? n : 0))
                .ToList(),
            Build = engine.TryGetProperty("build", out JsonElement build) ? build.Clone() : default,
        };
    }

    private static FluxEngineComponent ParseComponent(JsonElement c)
    {
        var dtypes = new Dictionary<string, int>();
        if (c.TryGetProperty("linears", out JsonElement linears) && linears.ValueKind == JsonValueKind.Object)
        {
            foreach (JsonProperty layer in linears.EnumerateObject())
            {
                string dtype = Text(layer.Value, "dtype") ?? "?";
                dtypes[dtype] = dtypes.GetValueOrDefault(dtype) + 1;
            }
        }

        return new FluxEngineComponent(
            Text(c, "name") ?? string.Empty,
            Text(c, "kind") switch
            {
                "flux_transformer" => ModelKind.FluxTransformer,
                "autoencoder" => ModelKind.Autoencoder,
                "t5_encoder" => ModelKind.T5Encoder,
                "clip_text" => ModelKind.ClipText,
                _ => ModelKind.Unknown,
            },
            Text(c, "variant"),
            c.TryGetProperty("parameter_count", out JsonElement p) && p.TryGetInt64(out long count) ? count : 0,
            dtypes,
            Text(c, "source"));
    }

    private static string? Text(JsonElement parent, string name) =>
        parent.ValueKind == JsonValueKind.Object && parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : null;

    private static IEnumerable<JsonElement> Array(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.Array ? value.EnumerateArray() : [];
}
