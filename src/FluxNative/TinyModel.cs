using FluxNative.Interop;

namespace FluxNative;

/// <summary>The two published FLUX.1 transformer variants.</summary>
public enum FluxVariant
{
    /// <summary>FLUX.1 [dev]: guidance-distilled, has the <c>guidance_in</c> embedder.</summary>
    Dev,

    /// <summary>FLUX.1 [schnell]: timestep-distilled, no guidance embedder.</summary>
    Schnell,
}

/// <summary>What <see cref="TinyModel.Write"/> writes. Zero sizes mean the kind's tiny defaults.</summary>
public sealed record TinyModelOptions
{
    /// <summary>The model to write.</summary>
    public ModelKind Kind { get; init; } = ModelKind.FluxTransformer;

    /// <summary>
    /// <see cref="CheckpointLayout.Bfl"/> (one file) or <see cref="CheckpointLayout.Diffusers"/> (a folder with
    /// config.json). The T5 and CLIP encoders exist only as diffusers folders.
    /// </summary>
    public CheckpointLayout Layout { get; init; } = CheckpointLayout.Bfl;

    /// <summary>The weight dtype: <see cref="DType.F32"/>, <see cref="DType.F16"/> or <see cref="DType.BF16"/>.</summary>
    public DType DType { get; init; } = DType.F32;

    /// <summary>For the FLUX transformer: dev (with guidance embedder) or schnell.</summary>
    public FluxVariant Variant { get; init; } = FluxVariant.Dev;

    /// <summary>Diffusers layout: the number of shard files (1 is a single file and no index).</summary>
    public int Shards { get; init; } = 1;

    /// <summary>The weights are a deterministic function of the seed.</summary>
    public ulong Seed { get; init; }

    /// <summary>Hidden size; 0 for the kind's default (FLUX: 64).</summary>
    public int HiddenSize { get; init; }

    /// <summary>Attention heads; 0 for the kind's default (FLUX: 2).</summary>
    public int NumHeads { get; init; }

    /// <summary>FLUX double blocks, T5/CLIP layers, or autoencoder resolution levels (ch_mult 1, 2, 4, 4, … cut to that many; the published model has 4); 0 for the default (2).</summary>
    public int Depth { get; init; }

    /// <summary>FLUX single blocks (default 3), or the autoencoder's ResnetBlocks per level (num_res_blocks, default 1; the published model has 2); 0 for the default.</summary>
    public int DepthSingle { get; init; }

    /// <summary>
    /// Every width as FLUX.1 publishes it (transformer 3072 wide with 4096-wide text and 768-wide pooled inputs, T5-XXL,
    /// CLIP-L, the 128-wide autoencoder) instead of the tiny ones; <see cref="HiddenSize"/> and <see cref="NumHeads"/>
    /// must then be 0, and <see cref="Depth"/>/<see cref="DepthSingle"/> of 0 mean the published depths. For benchmarks
    /// on random weights of the real sizes (<see cref="SyntheticModels"/>).
    /// </summary>
    public bool PublishedShapes { get; init; }
}

/// <summary>Tiny random models with the published tensor names, for tests, demos and benchmarks.</summary>
public static class TinyModel
{
    /// <summary>
    /// Writes a tiny model: one file at <paramref name="path"/> for the BFL layout, the folder
    /// <paramref name="path"/> (config.json plus weights) for diffusers.
    /// </summary>
    /// <exception cref="FluxNativeException">An unsupported combination (<see cref="FluxStatus.InvalidArgument"/>) or a write failure.</exception>
    public static unsafe void Write(TinyModelOptions options, string path)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!Enum.IsDefined(options.Kind) || options.Kind == ModelKind.Unknown)
        {
            throw new ArgumentException($"Cannot write a tiny model of kind {options.Kind}.", nameof(options));
        }

        FxTinyModelParams parameters;
        NativeMethods.fx_tiny_model_params_init(&parameters);
        parameters.Kind = (int)options.Kind;
        parameters.Layout = options.Layout switch
        {
            // fx_layout values; HuggingFace and Unknown are descriptions, not something to write.
            CheckpointLayout.Bfl => 1,
            CheckpointLayout.Diffusers => 2,
            _ => throw new ArgumentException($"Tiny models are written in the Bfl or Diffusers layout, not {options.Layout}.", nameof(options)),
        };
        parameters.DType = (int)options.DType;
        parameters.Guidance = options.Variant == FluxVariant.Dev ? 1 : 0;
        parameters.Shards = options.Shards;
        parameters.Seed = options.Seed;
        parameters.HiddenSize = options.HiddenSize;
        parameters.NumHeads = options.NumHeads;
        parameters.Depth = options.Depth;
        parameters.DepthSingle = options.DepthSingle;
        parameters.Shapes = options.PublishedShapes ? 1 : 0;   // fx_model_shapes
        NativeStatus.ThrowIfFailed(NativeMethods.fx_tiny_model_write(&parameters, path));
    }
}
