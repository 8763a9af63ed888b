namespace FluxNative;

/// <summary>What <see cref="SyntheticModels.Write"/> makes: FLUX.1 at its published widths, with random weights.</summary>
public sealed record SyntheticModelOptions
{
    /// <summary>The published depths: 19 double blocks, 38 single blocks, T5-XXL's 24 layers, CLIP-L's 12.</summary>
    public const int PublishedDepth = 19, PublishedDepthSingle = 38, PublishedT5Layers = 24, PublishedClipLayers = 12;

    /// <summary>[dev] (with the guidance embedder) or [schnell].</summary>
    public FluxVariant Variant { get; init; } = FluxVariant.Dev;

    /// <summary>Transformer double blocks; 0 for the published 19.</summary>
    public int Depth { get; init; }

    /// <summary>Transformer single blocks; 0 for the published 38.</summary>
    public int DepthSingle { get; init; }

    /// <summary>Layers of each text encoder, at most the published (T5 24, CLIP 12); 0 for the published.</summary>
    public int EncoderLayers { get; init; }

    /// <summary>The weights' dtype, as the published files store them: <see cref="DType.BF16"/> (or F16, F32).</summary>
    public DType DType { get; init; } = DType.BF16;

    /// <summary>The weights are a deterministic function of the seed.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>The depths actually written (0s resolved to the published ones).</summary>
    public (int Depth, int DepthSingle, int T5Layers, int ClipLayers) Resolved =>
        (Depth == 0 ? PublishedDepth : Depth, DepthSingle == 0 ? PublishedDepthSingle : DepthSingle,
         EncoderLayers == 0 ? PublishedT5Layers : Math.Min(EncoderLayers, PublishedT5Layers),
         EncoderLayers == 0 ? PublishedClipLayers : Math.Min(EncoderLayers, PublishedClipLayers));

    /// <summary>One line: variant, depths, dtype, seed.</summary>
    public string Summary
    {
        get
        {
            var (depth, single, t5, clip) = Resolved;
            return $"FLUX.1 [{(Variant == FluxVariant.Dev ? "dev" : "schnell")}] published widths, random {DType.SafetensorsName()} weights (seed {Seed}): "
                + $"{depth} double + {single} single blocks, T5 {t5} layers, CLIP {clip} layers";
        }
    }
}

/// <summary>
/// FLUX.1 with random weights of the published shapes, for measuring speed where nobody can or wants to download the
/// real weights (<c>flux bench --synthetic</c>): every component (transformer, T5-XXL, CLIP-L, autoencoder) has the
/// published widths and tensor names, so every GEMM, attention and convolution has the real model's sizes; depths
/// can be cut to fit a small machine (the time per block does not depend on the depth). The output is noise.
/// </summary>
/// <remarks>
/// The models are written once into a cache folder named after the options and reused: a model folder appears only
/// complete (written beside it, then renamed), so an interrupted write leaves nothing that looks finished.
/// </remarks>
public static class SyntheticModels
{
    /// <summary>Bumped when what is written for the same options changes, so old cached folders are not reused.</summary>
    private const int Version = 1;

    /// <summary>Where the models are cached by default: <c>$XDG_CACHE_HOME/fluxnative/synthetic</c>, else <c>~/.cache/fluxnative/synthetic</c>.</summary>
    public static string DefaultCacheDirectory
    {
        get
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string root = !string.IsNullOrEmpty(xdg) && Path.IsPathRooted(xdg)
                ? xdg
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(root, "fluxnative", "synthetic");
        }
    }

    /// <summary>The folder name of <paramref name="options"/>' models in the cache.</summary>
    public static string FolderName(SyntheticModelOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var (depth, single, t5, clip) = options.Resolved;
        string variant = options.Variant == FluxVariant.Dev ? "dev" : "schnell";
        return $"flux1-{variant}-{options.DType.SafetensorsName()}-d{depth}-s{single}-t5x{t5}-clipx{clip}-seed{options.Seed}-v{Version}";
    }

    /// <summary>
    /// The models of <paramref name="options"/> in <paramref name="cacheDirectory"/> (default
    /// <see cref="DefaultCacheDirectory"/>), written first when they are not there; <paramref name="written"/> says which.
    /// </summary>
    /// <exception cref="ArgumentException">A depth out of range.</exception>
    /// <exception cref="FluxNativeException">A write failed (disk full; a model larger than the writer can hold in memory).</exception>
    public static FluxPipelineSources Write(SyntheticModelOptions options, string? cacheDirectory, out bool written)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Depth < 0 || options.DepthSingle < 0 || options.EncoderLayers < 0 || options.Depth + options.DepthSingle > 4096)
        {
            throw new ArgumentException("Synthetic model depths must not be negative (0 means the published depth).", nameof(options));
        }

        if (options.DType is not (DType.BF16 or DType.F16 or DType.F32))
        {
            throw new ArgumentException($"Synthetic weights are bf16, f16 or f32, not {options.DType}.", nameof(options));
        }

        string root = cacheDirectory ?? DefaultCacheDirectory;
        string folder = Path.Combine(root, FolderName(options));
        written = false;
        if (!Directory.Exists(folder))
        {
            Directory.CreateDirectory(root);
            string partial = $"{folder}.partial-{Environment.ProcessId}";
            if (Directory.Exists(partial))
            {
                Directory.Delete(partial, recursive: true);
            }

            try
            {
                WriteComponents(options, partial);
                Directory.Move(partial, folder);   // another process may have finished first: then its copy is used
                written = true;
            }
            catch (IOException) when (Directory.Exists(folder))
            {
            }
            finally
            {
                if (Directory.Exists(partial))
                {
                    Directory.Delete(partial, recursive: true);
                }
            }
        }

        return Sources(folder);
    }

    private static FluxPipelineSources Sources(string folder) => new()
    {
        Transformer = Path.Combine(folder, "transformer.safetensors"),
        Autoencoder = Path.Combine(folder, "ae.safetensors"),
        Clip = Path.Combine(folder, "text_encoder"),
        T5 = Path.Combine(folder, "text_encoder_2"),
        ClipTokenizer = Path.Combine(FluxTokenizerFiles.Directory, "clip"),
        T5Tokenizer = Path.Combine(FluxTokenizerFiles.Directory, "t5"),
    };

    private static void WriteComponents(SyntheticModelOptions options, string folder)
    {
        Directory.CreateDirectory(folder);
        var (depth, single, t5, clip) = options.Resolved;
        FluxPipelineSources sources = Sources(folder);
        var common = new TinyModelOptions { PublishedShapes = true, DType = options.DType, Seed = options.Seed };
        // One component at a time: the writer holds a whole component in memory, never two.
        TinyModel.Write(common with { Kind = ModelKind.FluxTransformer, Variant = options.Variant, Depth = depth, DepthSingle = single }, sources.Transformer!);
        TinyModel.Write(common with { Kind = ModelKind.Autoencoder }, sources.Autoencoder!);
        TinyModel.Write(common with { Kind = ModelKind.ClipText, Layout = CheckpointLayout.Diffusers, Depth = clip }, sources.Clip!);
        TinyModel.Write(common with { Kind = ModelKind.T5Encoder, Layout = CheckpointLayout.Diffusers, Depth = t5 }, sources.T5!);
    }
}
