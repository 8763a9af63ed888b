using System.Text.Json;

namespace FluxNative;

/// <summary>How a loaded transformer stores its linear weights. Values mirror <c>fx_weight_format</c>.</summary>
public enum FluxWeightFormat
{
    /// <summary>F32 and BF16 weights used as the file holds them (zero-copy); F16 widened to F32.</summary>
    AsStored = 0,

    /// <summary>Every linear weight widened to F32 at load.</summary>
    F32 = 1,

    /// <summary>Every linear weight rounded to BF16 at load.</summary>
    Bf16 = 2,

    /// <summary>E4M3FN with one scale per output channel, quantised at load.</summary>
    Fp8 = 3,
}

/// <summary>
/// Precision of the activations entering a loaded transformer's linear layers. Values mirror <c>fx_activation_precision</c>.
/// </summary>
public enum FluxActivationPrecision
{
    /// <summary>Exact: F32 activations on every path, matching the reference (the default).</summary>
    F32 = 0,

    /// <summary>
    /// Faster: BF16 weights meet BF16-rounded activations in the CPU's BF16 dot products, at about 1e-2 relative
    /// error. It applies only to BF16 weights (stored as BF16, or <see cref="FluxWeightFormat.Bf16"/>) on CPUs with
    /// AVX512-BF16; other weight dtypes and CPUs without it stay exact.
    /// </summary>
    Bf16 = 1,
}

/// <summary>
/// The configuration of a loaded FLUX transformer, as the native library inferred it from the
/// checkpoint (<c>fx_flux_model_config_json</c>). It fixes the shapes <see cref="FluxTransformer.Forward(FluxForwardInputs)"/> accepts.
/// </summary>
public sealed record FluxTransformerConfig
{
    /// <summary>Channels of each image token (packed latents): 64 for FLUX.1.</summary>
    public required int InChannels { get; init; }

    /// <summary>Channels of each output token.</summary>
    public required int OutChannels { get; init; }

    /// <summary>Width of the residual stream (3072 for FLUX.1).</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Attention heads.</summary>
    public required int NumHeads { get; init; }

    /// <summary>Width of one head (<see cref="HiddenSize"/> / <see cref="NumHeads"/>).</summary>
    public required int HeadDim { get; init; }

    /// <summary>Hidden width of the MLPs.</summary>
    public required int MlpHidden { get; init; }

    /// <summary>Channels of each text token (the T5 width: 4096 for FLUX.1).</summary>
    public required int ContextInDim { get; init; }

    /// <summary>Width of the pooled text vector <c>y</c> (the CLIP width: 768 for FLUX.1).</summary>
    public required int VecInDim { get; init; }

    /// <summary>Width of the sinusoidal timestep (and guidance) embedding.</summary>
    public int TimeEmbedDim { get; init; }

    /// <summary>Double-stream blocks.</summary>
    public required int Depth { get; init; }

    /// <summary>Single-stream blocks.</summary>
    public required int DepthSingle { get; init; }

    /// <summary>Whether the model embeds a guidance scale (dev), which <see cref="FluxForwardInputs.Guidance"/> must then supply.</summary>
    public required bool GuidanceEmbed { get; init; }

    /// <summary>RoPE dimensions per position-id axis; they add up to <see cref="HeadDim"/>.</summary>
    public required IReadOnlyList<int> AxesDim { get; init; }

    /// <summary>RoPE base frequency.</summary>
    public required double Theta { get; init; }

    /// <summary>One line for people: the sizes that decide the cost of a forward pass.</summary>
    public string Summary =>
        FormattableString.Invariant(
            $"{(GuidanceEmbed ? "dev" : "schnell")}: hidden {HiddenSize}, {NumHeads} heads x {HeadDim}, mlp {MlpHidden}, ")
        + FormattableString.Invariant(
            $"{Depth} double + {DepthSingle} single blocks, in {InChannels}, out {OutChannels}, context {ContextInDim}, vec {VecInDim}, ")
        + FormattableString.Invariant($"axes [{string.Join(", ", AxesDim)}], theta {Theta}");

    /// <summary>Parses the JSON of <c>fx_flux_model_config_json</c>.</summary>
    /// <exception cref="JsonException">The text is not an object with every field this record needs.</exception>
    public static FluxTransformerConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new JsonException($"A FLUX transformer configuration is a JSON object, not {root.ValueKind}.");
        }

        return new FluxTransformerConfig
        {
            InChannels = Int32(root, "in_channels"),
            OutChannels = Int32(root, "out_channels"),
            HiddenSize = Int32(root, "hidden_size"),
            NumHeads = Int32(root, "num_heads"),
            HeadDim = Int32(root, "head_dim"),
            MlpHidden = Int32(root, "mlp_hidden"),
            ContextInDim = Int32(root, "context_in_dim"),
            VecInDim = Int32(root, "vec_in_dim"),
            // Not among the fields every caller needs; an older library may leave it out.
            TimeEmbedDim = root.TryGetProperty("time_embed_dim", out JsonElement time) && time.TryGetInt32(out int timeDim) ? timeDim : 0,
            Depth = Int32(root, "depth"),
            DepthSingle = Int32(root, "depth_single"),
            GuidanceEmbed = Required(root, "guidance_embed").GetBoolean(),
            AxesDim = Array.AsReadOnly(Required(root, "axes_dim").EnumerateArray().Select(axis => axis.GetInt32()).ToArray()),
            Theta = Required(root, "theta").GetDouble(),
        };
    }

    private static int Int32(JsonElement parent, string name) => Required(parent, name).GetInt32();

    // A missing field would otherwise surface as a zero size and a confusing shape error much later.
    private static JsonElement Required(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value)
            ? value
            : throw new JsonException($"The FLUX transformer configuration has no \"{name}\".");
}
