using System.Text.Json;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>The autoencoder's configuration, as the library inferred it from the checkpoint (docs/flux-model.md §2.2, §7).</summary>
public sealed record AutoencoderConfig
{
    /// <summary>Image channels the encoder reads (3).</summary>
    public required int InChannels { get; init; }

    /// <summary>Image channels the decoder writes (3).</summary>
    public required int OutChannels { get; init; }

    /// <summary>Base width (128 in the published model).</summary>
    public required int Ch { get; init; }

    /// <summary>Width multipliers per resolution level ([1, 2, 4, 4]).</summary>
    public required IReadOnlyList<int> ChMult { get; init; }

    /// <summary>Latent channels (16).</summary>
    public required int ZChannels { get; init; }

    /// <summary>Pixels per latent cell along each side, 2^(levels − 1) (8).</summary>
    public required int Downscale { get; init; }

    /// <summary>Latent normalisation: FLUX latent = scale·(z − shift) (0.3611).</summary>
    public required double ScaleFactor { get; init; }

    /// <summary>Latent normalisation shift (0.1159).</summary>
    public required double ShiftFactor { get; init; }

    /// <summary>True when the checkpoint holds the encoder (image-to-image).</summary>
    public required bool HasEncoder { get; init; }

    /// <summary>True when the checkpoint holds the decoder (text-to-image).</summary>
    public required bool HasDecoder { get; init; }

    /// <summary>Parses the JSON of <c>fx_ae_model_config_json</c>.</summary>
    /// <exception cref="JsonException">A field is missing.</exception>
    public static AutoencoderConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        return new AutoencoderConfig
        {
            InChannels = Required(root, "in_channels").GetInt32(),
            OutChannels = Required(root, "out_channels").GetInt32(),
            Ch = Required(root, "ch").GetInt32(),
            ChMult = Array.AsReadOnly(Required(root, "ch_mult").EnumerateArray().Select(m => m.GetInt32()).ToArray()),
            ZChannels = Required(root, "z_channels").GetInt32(),
            Downscale = Required(root, "downscale").GetInt32(),
            ScaleFactor = Required(root, "scale_factor").GetDouble(),
            ShiftFactor = Required(root, "shift_factor").GetDouble(),
            HasEncoder = Required(root, "has_encoder").GetBoolean(),
            HasDecoder = Required(root, "has_decoder").GetBoolean(),
        };
    }

    private static JsonElement Required(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value)
            ? value
            : throw new JsonException($"The autoencoder configuration has no \"{name}\".");
}

/// <summary>
/// The FLUX autoencoder (native, CPU backend): FLUX-normalised latents to pixels and back. Loads the BFL
/// <c>ae.safetensors</c> or a diffusers <c>vae/</c> folder; weights are held in float32.
/// </summary>
public sealed class Autoencoder : IDisposable
{
    private readonly AeModelHandle handle;

    private Autoencoder(AeModelHandle handle, AutoencoderConfig config)
    {
        this.handle = handle;
        Config = config;
    }

    /// <summary>The configuration inferred from the checkpoint.</summary>
    public AutoencoderConfig Config { get; }

    /// <summary>Loads the autoencoder from an open checkpoint, which may be disposed right after.</summary>
    /// <param name="checkpoint">A BFL <c>ae.safetensors</c> or a diffusers <c>vae/</c> folder.</param>
    /// <param name="threads">0: the process-wide pool.</param>
    /// <param name="device">Where the model lives and runs (default: the CPU).</param>
    /// <exception cref="FluxNativeException">Not an autoencoder (<see cref="FluxStatus.Unsupported"/>), a tensor is missing, or the device cannot be used (the message says why).</exception>
    public static unsafe Autoencoder Load(Checkpoint checkpoint, int threads = 0, FluxDevice? device = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        FxAeLoadParams parameters;
        NativeMethods.fx_ae_load_params_init(&parameters);
        parameters.NumThreads = threads;
        AeModelHandle handle;
        fixed (byte* deviceName = (device ?? FluxDevice.Cpu).ToUtf8Z())
        {
            parameters.Device = deviceName;
            NativeStatus.ThrowIfFailed(NativeMethods.fx_ae_model_load(checkpoint.Handle, &parameters, out handle));
        }

        try
        {
            string json = NativeString.Read(handle, static (m, buffer, capacity, needed) => NativeMethods.fx_ae_model_config_json(m, buffer, capacity, needed));
            return new Autoencoder(handle, AutoencoderConfig.Parse(json));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Opens <paramref name="path"/>, loads the autoencoder and closes the checkpoint.</summary>
    /// <inheritdoc cref="Load(Checkpoint, int, FluxDevice?)"/>
    public static Autoencoder Load(string path, int threads = 0, FluxDevice? device = null)
    {
        using Checkpoint checkpoint = Checkpoint.Open(path);
        return Load(checkpoint, threads, device);
    }

    /// <summary>
    /// Decodes FLUX-normalised latents <c>[B, z, h, w]</c> into pixels <c>[B, 3, h·Downscale, w·Downscale]</c>,
    /// nominally in [−1, 1] (not clamped).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="latents"/> does not hold B·z·h·w values.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired (checked between blocks).</exception>
    public float[] Decode(ReadOnlySpan<float> latents, int batch, int height, int width, CancellationToken cancellationToken = default) =>
        Decode(latents, batch, height, width, tile: 0, overlap: 0, cancellationToken);

    /// <summary>
    /// As <see cref="Decode(ReadOnlySpan{float}, int, int, int, CancellationToken)"/>, in overlapping tiles of
    /// <paramref name="tile"/> × <paramref name="tile"/> latent cells that overlap by <paramref name="overlap"/> cells
    /// (1 to tile/2), blended linearly across the overlaps: memory grows with the tile, not the image. Close to the
    /// untiled decode, not equal (each tile's normalisations see that tile). <paramref name="tile"/> 0, or an image
    /// within one tile, decodes whole.
    /// </summary>
    /// <exception cref="ArgumentException">The sizes do not fit, or the overlap is out of range.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired (checked between blocks).</exception>
    public unsafe float[] Decode(ReadOnlySpan<float> latents, int batch, int height, int width, int tile, int overlap, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        CheckShape(latents.Length, nameof(latents), batch, Config.ZChannels, height, width);
        if (tile > 0 && (overlap < 1 || overlap * 2 > tile))
        {
            throw new ArgumentException($"The tile overlap must be between 1 and half the tile ({tile} cells); it is {overlap}.", nameof(overlap));
        }

        cancellationToken.ThrowIfCancellationRequested();
        long count = (long)batch * Config.OutChannels * height * Config.Downscale * width * Config.Downscale;
        float[] pixels = GC.AllocateUninitializedArray<float>(checked((int)count));
        using var cancellation = new NativeCancellation(cancellationToken);
        fixed (float* input = latents)
        fixed (float* output = pixels)
        {
            NativeCancellation.ThrowIfFailed(
                NativeMethods.fx_ae_decode_tiled(handle, input, batch, height, width, tile, overlap, output, (nuint)pixels.Length, cancellation.Pointer),
                cancellationToken);
        }

        return pixels;
    }

    /// <summary>
    /// Encodes pixels <c>[B, 3, H, W]</c> in [−1, 1] (H, W multiples of <see cref="AutoencoderConfig.Downscale"/>) into
    /// FLUX-normalised latents <c>[B, z, H/Downscale, W/Downscale]</c> (the posterior mean).
    /// </summary>
    /// <exception cref="ArgumentException">The sizes do not fit.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public unsafe float[] Encode(ReadOnlySpan<float> pixels, int batch, int height, int width, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        CheckShape(pixels.Length, nameof(pixels), batch, Config.InChannels, height, width);
        if (height % Config.Downscale != 0 || width % Config.Downscale != 0)
        {
            throw new ArgumentException($"Height and width must be multiples of {Config.Downscale}; they are {height}×{width}.", nameof(pixels));
        }

        cancellationToken.ThrowIfCancellationRequested();
        long count = (long)batch * Config.ZChannels * (height / Config.Downscale) * (width / Config.Downscale);
        float[] latents = GC.AllocateUninitializedArray<float>(checked((int)count));
        using var cancellation = new NativeCancellation(cancellationToken);
        fixed (float* input = pixels)
        fixed (float* output = latents)
        {
            NativeCancellation.ThrowIfFailed(
                NativeMethods.fx_ae_encode(handle, input, batch, height, width, output, (nuint)latents.Length, cancellation.Pointer),
                cancellationToken);
        }

        return latents;
    }

    /// <summary>Frees the model.</summary>
    public void Dispose() => handle.Dispose();

    private static void CheckShape(int length, string name, int batch, int channels, int height, int width)
    {
        if (batch < 1 || height < 1 || width < 1)
        {
            throw new ArgumentException($"batch, height and width must be at least 1 (got {batch}, {height}, {width}).", name);
        }

        long expected = (long)batch * channels * height * width;
        if (length != expected)
        {
            throw new ArgumentException($"{name} has {length} values but [{batch}, {channels}, {height}, {width}] needs {expected}.", name);
        }
    }
}
