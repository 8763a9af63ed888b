using System.Text.Json;

namespace FluxNative;

/// <summary>What a checkpoint holds. Values mirror <c>fx_model_kind</c> in <c>fluxnative.h</c>.</summary>
public enum ModelKind
{
    /// <summary>Not recognised.</summary>
    Unknown = 0,

    /// <summary>The FLUX.1 flow transformer (dev, schnell and their variants).</summary>
    FluxTransformer = 1,

    /// <summary>The FLUX autoencoder (VAE).</summary>
    Autoencoder = 2,

    /// <summary>The T5-v1.1 text encoder.</summary>
    T5Encoder = 3,

    /// <summary>The CLIP ViT-L/14 text encoder.</summary>
    ClipText = 4,
}

/// <summary>How a checkpoint's files and tensor names are laid out.</summary>
public enum CheckpointLayout
{
    /// <summary>Not recognised.</summary>
    Unknown = 0,

    /// <summary>Black Forest Labs single files (<c>flux1-dev.safetensors</c>, <c>ae.safetensors</c>).</summary>
    Bfl = 1,

    /// <summary>Hugging Face diffusers folders (<c>transformer/</c>, <c>vae/</c>, <c>text_encoder/</c>, ...).</summary>
    Diffusers = 2,

    /// <summary>Hugging Face transformers names (the text encoders as <c>transformers</c> saves them).</summary>
    HuggingFace = 3,
}

/// <summary>What path a checkpoint was opened from.</summary>
public enum CheckpointSource
{
    /// <summary>Not reported.</summary>
    Unknown = 0,

    /// <summary>One <c>.safetensors</c> file.</summary>
    File = 1,

    /// <summary>A <c>*.safetensors.index.json</c> and the shards it names.</summary>
    Index = 2,

    /// <summary>A folder.</summary>
    Folder = 3,
}

/// <summary>The tensor set of a checkpoint compared with the one its inferred configuration implies.</summary>
/// <param name="ExpectedCount">Tensors the configuration implies.</param>
/// <param name="MissingCount">Implied tensors that are absent.</param>
/// <param name="UnexpectedCount">Tensors present that the configuration does not explain.</param>
/// <param name="ShapeMismatchCount">Tensors present with another shape than implied.</param>
public sealed record TensorSetCheck(long ExpectedCount, long MissingCount, long UnexpectedCount, long ShapeMismatchCount);

/// <summary>
/// The native library's description of a checkpoint (<see cref="Checkpoint.DescribeJson"/>), typed.
/// The inferred configuration is kind-specific and stays JSON (<see cref="Config"/>).
/// </summary>
public sealed record CheckpointDescription
{
    /// <summary>What the checkpoint is.</summary>
    public ModelKind Kind { get; init; }

    /// <summary>The layout of its files and names.</summary>
    public CheckpointLayout Layout { get; init; }

    /// <summary>For FLUX transformers, "dev", "schnell", "fill", "canny-depth", ...; otherwise null.</summary>
    public string? Variant { get; init; }

    /// <summary>A prefix stripped from every tensor name before recognition (e.g. <c>model.diffusion_model.</c>).</summary>
    public string KeyPrefix { get; init; } = string.Empty;

    /// <summary>
    /// Every model found under a known name prefix, largest first: a ComfyUI "all in one" file lists its
    /// transformer (<c>model.diffusion_model.</c>), text encoders and VAE (<c>vae.</c>); empty when no prefix is used.
    /// </summary>
    public IReadOnlyList<CheckpointComponent> Components { get; init; } = [];

    /// <summary>The configuration inferred from tensor names and shapes (and config.json when present).</summary>
    public JsonElement Config { get; init; }

    /// <summary>What an engine file (<c>flux build</c>, docs/engines.md) holds, when this is one; null for published weights.</summary>
    public FluxEngineInfo? Engine { get; init; }

    /// <summary>The number of parameters (elements of every tensor).</summary>
    public long ParameterCount { get; init; }

    /// <summary>The number of tensors.</summary>
    public long TensorCount { get; init; }

    /// <summary>Bytes of tensor data.</summary>
    public long TotalBytes { get; init; }

    /// <summary>Tensor count per stored dtype, keyed by the safetensors name ("BF16", "F32", ...) or, for GGUF
    /// block-quantised tensors, ggml's type name ("Q8_0", "Q4_K", ...).</summary>
    public IReadOnlyDictionary<string, long> DTypes { get; init; } = new Dictionary<string, long>();

    /// <summary>Whether it was opened from a file, an index or a folder.</summary>
    public CheckpointSource Source { get; init; }

    /// <summary>Every file holding tensors.</summary>
    public IReadOnlyList<string> Files { get; init; } = [];

    /// <summary>The safetensors <c>__metadata__</c> (values that are not strings keep their JSON text).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    /// <summary>Whether a diffusers <c>config.json</c> was found beside the weights.</summary>
    public bool HasConfigJson { get; init; }

    /// <summary>Missing or unexpected tensors and shape mismatches found while inferring the configuration.</summary>
    public IReadOnlyList<string> Problems { get; init; } = [];

    /// <summary>Remarks that are not problems (ignored tensors, config.json keys that are absent).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>How the tensor set compared with the one the inferred configuration implies; null when it could not be checked.</summary>
    public TensorSetCheck? Checks { get; init; }

    /// <summary>A configuration value as an integer, or null when absent or not an integer.</summary>
    public long? ConfigInt64(string key) =>
        Config.ValueKind == JsonValueKind.Object
        && Config.TryGetProperty(key, out JsonElement value)
        && value.ValueKind == JsonValueKind.Number
        && value.TryGetInt64(out long number)
            ? number
            : null;

    /// <summary>A configuration value as a boolean, or null when absent or not a boolean.</summary>
    public bool? ConfigBoolean(string key) =>
        Config.ValueKind == JsonValueKind.Object
        && Config.TryGetProperty(key, out JsonElement value)
        && value.ValueKind is JsonValueKind.True or JsonValueKind.False
            ? value.GetBoolean()
            : null;

    /// <summary>
    /// Parses the JSON of <see cref="Checkpoint.DescribeJson"/>. Unknown fields are ignored and unknown
    /// enum spellings map to the Unknown values, so a newer library does not break an older binding.
    /// </summary>
    /// <exception cref="JsonException">The text is not a JSON object.</exception>
    public static CheckpointDescription Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new JsonException($"A checkpoint description is a JSON object, not {root.ValueKind}.");
        }

        return new CheckpointDescription
        {
            Kind = String(root, "kind") switch
            {
                "flux_transformer" => ModelKind.FluxTransformer,
                "autoencoder" => ModelKind.Autoencoder,
                "t5_encoder" => ModelKind.T5Encoder,
                "clip_text" => ModelKind.ClipText,
                _ => ModelKind.Unknown,
            },
            Layout = String(root, "layout") switch
            {
                "bfl" => CheckpointLayout.Bfl,
                "diffusers" => CheckpointLayout.Diffusers,
                "hf" => CheckpointLayout.HuggingFace,
                _ => CheckpointLayout.Unknown,
            },
            Variant = String(root, "variant"),
            KeyPrefix = String(root, "key_prefix") ?? string.Empty,
            Components = root.TryGetProperty("components", out JsonElement components) && components.ValueKind == JsonValueKind.Array
                ? components.EnumerateArray()
                    .Select(c => new CheckpointComponent(String(c, "prefix") ?? string.Empty, String(c, "kind") ?? "unknown", Int64(c, "tensor_count")))
                    .ToList()
                : [],
            // Clone: the element must outlive the document disposed at the end of this method.
            Config = root.TryGetProperty("config", out JsonElement config) ? config.Clone() : default,
            Engine = root.TryGetProperty("engine", out JsonElement engine) && engine.ValueKind == JsonValueKind.Object
                ? FluxEngineInfo.Parse(engine)
                : null,
            ParameterCount = Int64(root, "parameter_count"),
            TensorCount = Int64(root, "tensor_count"),
            TotalBytes = Int64(root, "total_bytes"),
            DTypes = Object(root, "dtypes").ToDictionary(p => p.Name, p => p.Value.TryGetInt64(out long n) ? n : 0),
            Source = String(root, "source") switch
            {
                "file" => CheckpointSource.File,
                "index" => CheckpointSource.Index,
                "folder" => CheckpointSource.Folder,
                _ => CheckpointSource.Unknown,
            },
            Files = Strings(root, "files"),
            Metadata = Object(root, "metadata").ToDictionary(
                p => p.Name, p => p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()! : p.Value.GetRawText()),
            HasConfigJson = root.TryGetProperty("has_config_json", out JsonElement hasConfig) && hasConfig.ValueKind == JsonValueKind.True,
            Problems = Strings(root, "problems"),
            Notes = Strings(root, "notes"),
            Checks = root.TryGetProperty("checks", out JsonElement checks) && checks.ValueKind == JsonValueKind.Object
                ? new TensorSetCheck(
                    Int64(checks, "expected_count"),
                    Int64(checks, "missing_count"),
                    Int64(checks, "unexpected_count"),
                    Int64(checks, "shape_mismatch_count"))
                : null,
        };
    }

    private static string? String(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    private static long Int64(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out long n) ? n : 0;

    private static IEnumerable<JsonProperty> Object(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.Object ? value.EnumerateObject() : [];

    private static string[] Strings(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value) && value.ValueKind == JsonValueKind.Array
            ? value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText()).ToArray()
            : [];
}

/// <summary>One model inside a checkpoint file, found under a name prefix.</summary>
/// <param name="Prefix">The prefix its tensor names carry (e.g. <c>vae.</c>).</param>
/// <param name="Kind">The recognizer's kind ("flux_transformer", "autoencoder", "t5_encoder", "clip_text", "unknown").</param>
/// <param name="TensorCount">Its tensors.</param>
public sealed record CheckpointComponent(string Prefix, string Kind, long TensorCount);
