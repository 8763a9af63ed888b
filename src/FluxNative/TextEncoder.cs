using System.Text.Json;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>The configuration of a text encoder, as the library inferred it (docs/flux-model.md §2.3).</summary>
public sealed record TextEncoderConfig
{
    /// <summary><see cref="ModelKind.ClipText"/> or <see cref="ModelKind.T5Encoder"/>.</summary>
    public required ModelKind Kind { get; init; }

    /// <summary>Token ids accepted: 0 to VocabSize − 1.</summary>
    public required int VocabSize { get; init; }

    /// <summary>Width of the hidden states (CLIP-L 768, T5-XXL 4096).</summary>
    public required int HiddenSize { get; init; }

    /// <summary>Transformer layers.</summary>
    public required int NumLayers { get; init; }

    /// <summary>Attention heads.</summary>
    public required int NumHeads { get; init; }

    /// <summary>Longest input (CLIP: 77); 0 when unbounded (T5, relative positions).</summary>
    public required int MaxPositions { get; init; }

    /// <summary>Parses the JSON of <c>fx_text_model_config_json</c>.</summary>
    public static TextEncoderConfig Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        using JsonDocument document = JsonDocument.Parse(json);
        JsonElement root = document.RootElement;
        string kind = Required(root, "kind").GetString() ?? string.Empty;
        return new TextEncoderConfig
        {
            Kind = kind switch
            {
                "clip_text" => ModelKind.ClipText,
                "t5_encoder" => ModelKind.T5Encoder,
                _ => throw new JsonException($"Unknown text encoder kind \"{kind}\"."),
            },
            VocabSize = Required(root, "vocab_size").GetInt32(),
            HiddenSize = Required(root, "hidden_size").GetInt32(),
            NumLayers = Required(root, "num_layers").GetInt32(),
            NumHeads = Required(root, "num_heads").GetInt32(),
            MaxPositions = Required(root, "max_positions").GetInt32(),
        };
    }

    private static JsonElement Required(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out JsonElement value)
            ? value
            : throw new JsonException($"The text encoder configuration has no \"{name}\".");
}

/// <summary>What a text encoder returns for a batch of token ids.</summary>
/// <param name="Hidden">The last hidden state <c>[B, L, HiddenSize]</c>, or null when not asked for.</param>
/// <param name="Pooled">CLIP's pooled vector <c>[B, HiddenSize]</c> (hidden state at the first end-of-text token), or null.</param>
public sealed record TextEncoding(float[]? Hidden, float[]? Pooled);

/// <summary>
/// A FLUX text encoder, run natively: CLIP ViT-L/14's text tower (pooled vector <c>y</c>) or the T5-v1.1 encoder
/// (token states <c>txt</c>). No attention mask, as FLUX uses them (docs/flux-model.md §3.4).
/// </summary>
public sealed class TextEncoder : IDisposable
{
    private readonly TextModelHandle handle;

    private TextEncoder(TextModelHandle handle, TextEncoderConfig config)
    {
        this.handle = handle;
        Config = config;
    }

    /// <summary>The configuration inferred from the checkpoint.</summary>
    public TextEncoderConfig Config { get; }

    /// <summary>Loads a CLIP (<c>text_encoder/</c>) or T5 (<c>text_encoder_2/</c>) encoder from an open checkpoint, which may be disposed right after.</summary>
    /// <param name="checkpoint">The encoder's folder (or file).</param>
    /// <param name="format">How to hold the linear weights (T5-XXL in bf16 is 9.5 GB: keep it as stored, or FP8).</param>
    /// <param name="threads">0: the process-wide pool.</param>
    /// <param name="device">Where the model lives and runs (default: the CPU).</param>
    /// <exception cref="FluxNativeException">Not a text encoder (<see cref="FluxStatus.Unsupported"/>), a tensor is missing, or the device cannot be used (the message says why).</exception>
    /// <param name="kind">Which encoder to load from a file holding several (an engine, an "all in one" file): <see cref="ModelKind.ClipText"/> or <see cref="ModelKind.T5Encoder"/>; null for the one the checkpoint holds.</param>
    public static unsafe TextEncoder Load(Checkpoint checkpoint, FluxWeightFormat format = FluxWeightFormat.AsStored, int threads = 0, FluxDevice? device = null, ModelKind? kind = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        if (!Enum.IsDefined(format))
        {
            throw new ArgumentOutOfRangeException(nameof(format), format, "Not a FluxWeightFormat.");
        }

        FxTextLoadParams parameters;
        NativeMethods.fx_text_load_params_init(&parameters);
        parameters.WeightFormat = (int)format;
        parameters.NumThreads = threads;
        byte[]? kindName = kind switch
        {
            null => null,
            ModelKind.ClipText => "clip_text\0"u8.ToArray(),
            ModelKind.T5Encoder => "t5_encoder\0"u8.ToArray(),
            _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "A text encoder is ClipText or T5Encoder."),
        };
        TextModelHandle handle;
        fixed (byte* deviceName = (device ?? FluxDevice.Cpu).ToUtf8Z())
        fixed (byte* kindText = kindName)
        {
            parameters.Device = deviceName;
            parameters.Kind = kindText;
            NativeStatus.ThrowIfFailed(NativeMethods.fx_text_model_load(checkpoint.Handle, &parameters, out handle));
        }

        try
        {
            string json = NativeString.Read(handle, static (m, buffer, capacity, needed) => NativeMethods.fx_text_model_config_json(m, buffer, capacity, needed));
            return new TextEncoder(handle, TextEncoderConfig.Parse(json));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Opens <paramref name="path"/>, loads the encoder and closes the checkpoint.</summary>
    /// <inheritdoc cref="Load(Checkpoint, FluxWeightFormat, int, FluxDevice?, ModelKind?)"/>
    public static TextEncoder Load(string path, FluxWeightFormat format = FluxWeightFormat.AsStored, int threads = 0, FluxDevice? device = null, ModelKind? kind = null)
    {
        using Checkpoint checkpoint = Checkpoint.Open(path);
        return Load(checkpoint, format, threads, device, kind);
    }

    /// <summary>Encodes token ids <c>[batch, length]</c>.</summary>
    /// <param name="ids">The ids, row-major.</param>
    /// <param name="batch">Rows.</param>
    /// <param name="hidden">Return the last hidden state.</param>
    /// <param name="pooled">Return the pooled vector (CLIP only).</param>
    /// <param name="cancellationToken">Checked between layers, inside the library.</param>
    /// <exception cref="ArgumentException">The ids do not fill whole rows, an id is out of range, or pooled is asked of T5.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public unsafe TextEncoding Encode(ReadOnlySpan<int> ids, int batch, bool hidden = true, bool pooled = false, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(handle.IsClosed, this);
        if (batch < 1 || ids.Length == 0 || ids.Length % batch != 0)
        {
            throw new ArgumentException($"{ids.Length} ids do not make {batch} rows of equal length.", nameof(ids));
        }

        if (pooled && Config.Kind != ModelKind.ClipText)
        {
            throw new ArgumentException("Only CLIP has a pooled output.", nameof(pooled));
        }

        int length = ids.Length / batch;
        if (Config.MaxPositions > 0 && length > Config.MaxPositions)
        {
            throw new ArgumentException($"Rows have {length} tokens; this encoder takes at most {Config.MaxPositions}.", nameof(ids));
        }

        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)Config.VocabSize)
            {
                throw new ArgumentException($"ids[{i / length}, {i % length}] = {ids[i]} is outside the vocabulary [0, {Config.VocabSize}).", nameof(ids));
            }
        }

        cancellationToken.ThrowIfCancellationRequested();
        float[]? hiddenStates = hidden ? GC.AllocateUninitializedArray<float>(checked(ids.Length * Config.HiddenSize)) : null;
        float[]? pooledVector = pooled ? GC.AllocateUninitializedArray<float>(checked(batch * Config.HiddenSize)) : null;
        using var cancellation = new NativeCancellation(cancellationToken);
        fixed (int* input = ids)
        fixed (float* h = hiddenStates)
        fixed (float* p = pooledVector)
        {
            NativeCancellation.ThrowIfFailed(
                NativeMethods.fx_text_encode(handle, input, batch, length, h, (nuint)(hiddenStates?.Length ?? 0), p, (nuint)(pooledVector?.Length ?? 0), cancellation.Pointer),
                cancellationToken);
        }

        return new TextEncoding(hiddenStates, pooledVector);
    }

    /// <summary>Frees the model.</summary>
    public void Dispose() => handle.Dispose();
}
