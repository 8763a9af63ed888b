namespace FluxNative.Cli;

/// <summary>The <c>flux tiny-model</c> choices as typed on the command line, turned into <see cref="TinyModelOptions"/>.</summary>
/// <remarks>Sizes of 0 mean the kind's tiny default; what depth and depth-single count depends on the kind (see <see cref="TinyModelOptions"/>).</remarks>
internal sealed record TinyModelRequest(
    string Kind, string Variant, string? Layout, string DType, int Shards, ulong Seed,
    int HiddenSize = 0, int NumHeads = 0, int Depth = 0, int DepthSingle = 0)
{
    public static readonly string[] Kinds = ["flux", "ae", "t5", "clip"];

    public TinyModelOptions ToOptions()
    {
        ModelKind kind = Kind switch
        {
            "flux" => ModelKind.FluxTransformer,
            "ae" => ModelKind.Autoencoder,
            "t5" => ModelKind.T5Encoder,
            "clip" => ModelKind.ClipText,
            _ => throw new CliInputException($"Unknown model kind '{Kind}'; expected one of {string.Join(", ", Kinds)}."),
        };

        // The published text encoders exist only as diffusers folders, so that is their default.
        CheckpointLayout layout = (Layout ?? (kind is ModelKind.T5Encoder or ModelKind.ClipText ? "diffusers" : "bfl")) switch
        {
            "bfl" => CheckpointLayout.Bfl,
            "diffusers" => CheckpointLayout.Diffusers,
            _ => throw new CliInputException($"Unknown layout '{Layout}'; expected bfl or diffusers."),
        };

        if (!DTypeExtensions.TryParse(DType, out DType dtype) || dtype is not (FluxNative.DType.F32 or FluxNative.DType.BF16 or FluxNative.DType.F16))
        {
            throw new CliInputException($"Unsupported weight dtype '{DType}'; expected f32, bf16 or f16.");
        }

        return new TinyModelOptions
        {
            Kind = kind,
            Layout = layout,
            DType = dtype,
            Variant = Variant == "schnell" ? FluxVariant.Schnell : FluxVariant.Dev,
            Shards = Shards,
            Seed = Seed,
            HiddenSize = HiddenSize,
            NumHeads = NumHeads,
            Depth = Depth,
            DepthSingle = DepthSingle,
        };
    }

    /// <summary>Writes the model and returns the line to print.</summary>
    public string Write(string path)
    {
        TinyModelOptions options = ToOptions();
        TinyModel.Write(options, path);
        string what = options.Kind == ModelKind.FluxTransformer
            ? $"{CheckpointReport.KindName(options.Kind)} ({options.Variant.ToString().ToLowerInvariant()})"
            : CheckpointReport.KindName(options.Kind);
        string shards = options.Layout == CheckpointLayout.Diffusers && options.Shards > 1 ? $", {options.Shards} shards" : string.Empty;
        return $"Wrote a tiny {what}, {CheckpointReport.LayoutName(options.Layout)} layout, {options.DType.SafetensorsName()}{shards}, seed {options.Seed}: {path}";
    }
}
