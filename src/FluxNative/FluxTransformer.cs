using System.Buffers;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// The FLUX.1 flow transformer, loaded by the native library on a <see cref="FluxDevice"/>: one denoising step's
/// velocity prediction for a batch of packed latents.
/// </summary>
/// <example><code>
/// using FluxTransformer model = FluxTransformer.Load("flux1-dev.safetensors", FluxWeightFormat.Bf16);
/// float[] velocity = model.Forward(inputs);
/// </code></example>
/// <remarks>
/// The model shares the checkpoint's memory-mapped data, so the <see cref="Checkpoint"/> it was loaded from
/// may be disposed right after <see cref="Load(Checkpoint, FluxWeightFormat, int, FluxActivationPrecision, FluxDevice?, IReadOnlyList{FluxLora}?)"/>. Forward passes may be
/// called from any thread; the library runs one at a time per model. <see cref="Dispose"/> frees the model
/// only after a forward running on another thread has returned.
/// </remarks>
public sealed class FluxTransformer : IDisposable
{
    private readonly FluxModelHandle handle;

    private FluxTransformer(FluxModelHandle handle, FluxTransformerConfig config, FluxWeightFormat weightFormat, FluxActivationPrecision activations, FluxDevice device)
    {
        this.handle = handle;
        Device = device;
        Config = config;
        WeightFormat = weightFormat;
        Activations = activations;
    }

    internal FluxModelHandle Handle => handle;

    /// <summary>The configuration inferred from the checkpoint; it fixes the shapes <see cref="Forward(FluxForwardInputs)"/> accepts.</summary>
    public FluxTransformerConfig Config { get; }

    /// <summary>Where the model lives and runs.</summary>
    public FluxDevice Device { get; }

    /// <summary>How the linear weights are held in memory.</summary>
    public FluxWeightFormat WeightFormat { get; }

    /// <summary>
    /// The precision asked for the activations entering the linear layers. <see cref="FluxActivationPrecision.Bf16"/>
    /// takes effect only for BF16 weights on CPUs with AVX512-BF16; elsewhere the forward stays exact.
    /// </summary>
    public FluxActivationPrecision Activations { get; }

    /// <summary>Loads the transformer from an open checkpoint (a BFL file or a diffusers folder).</summary>
    /// <param name="checkpoint">The checkpoint; it may be disposed as soon as this returns.</param>
    /// <param name="format">How to hold the linear weights: as stored, or converted to F32, BF16 or FP8 at load.</param>
    /// <param name="threads">Threads for forward passes: 0 uses the process-wide pool (one per core, or <c>FX_NUM_THREADS</c>).</param>
    /// <param name="activations">
    /// <see cref="FluxActivationPrecision.F32"/> (exact, the default) or <see cref="FluxActivationPrecision.Bf16"/>:
    /// faster BF16 dot products at about 1e-2 relative error, only for BF16 weights on CPUs with AVX512-BF16.
    /// </param>
    /// <param name="device">Where the model lives and runs (default: the CPU).</param>
    /// <param name="loras">LoRA files merged into the weights before they are packed (and quantised, for FP8), in order.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="format"/> or <paramref name="activations"/> is not a defined value, or <paramref name="threads"/> is negative.</exception>
    /// <exception cref="FluxNativeException">
    /// The checkpoint is not a FLUX transformer (<see cref="FluxStatus.Unsupported"/>) or lacks a tensor it needs;
    /// the message names it. Or the device cannot be used: the message says what is missing.
    /// </exception>
    public static unsafe FluxTransformer Load(
        Checkpoint checkpoint,
        FluxWeightFormat format = FluxWeightFormat.AsStored,
        int threads = 0,
        FluxActivationPrecision activations = FluxActivationPrecision.F32,
        FluxDevice? device = null,
        IReadOnlyList<FluxLora>? loras = null)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (!Enum.IsDefined(format))
        {
            throw new ArgumentOutOfRangeException(nameof(format), format, "Not a FluxWeightFormat.");
        }

        if (!Enum.IsDefined(activations))
        {
            throw new ArgumentOutOfRangeException(nameof(activations), activations, "Not a FluxActivationPrecision.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(threads);

        FxFluxLoadParams parameters;
        NativeMethods.fx_flux_load_params_init(&parameters);
        parameters.WeightFormat = (int)format;
        parameters.NumThreads = threads;
        parameters.Activations = (int)activations;
        FluxModelHandle handle;
        var loraFiles = new List<Checkpoint>();
        var held = new List<CheckpointHandle>();
        try
        {
            foreach (FluxLora lora in loras ?? [])
            {
                loraFiles.Add(Checkpoint.Open(lora.Path));
            }

            var native = new FxLora[loraFiles.Count];
            for (int i = 0; i < native.Length; i++)
            {
                // The raw handles go into a struct: each is kept from being released until the load returns.
                bool added = false;
                loraFiles[i].Handle.DangerousAddRef(ref added);
                held.Add(loraFiles[i].Handle);
                native[i] = new FxLora { Checkpoint = loraFiles[i].Handle.DangerousGetHandle(), Strength = loras![i].Strength };
            }

            fixed (byte* deviceName = (device ?? FluxDevice.Cpu).ToUtf8Z())
            fixed (FxLora* nativeLoras = native)
            {
                parameters.Device = deviceName;
                parameters.Loras = native.Length > 0 ? nativeLoras : null;
                parameters.LoraCount = native.Length;
                NativeStatus.ThrowIfFailed(NativeMethods.fx_flux_model_load(checkpoint.Handle, &parameters, out handle));
            }
        }
        finally
        {
            foreach (CheckpointHandle h in held)
            {
                h.DangerousRelease();
            }

            foreach (Checkpoint file in loraFiles)
            {
                file.Dispose();
            }
        }

        try
        {
            return new FluxTransformer(handle, FluxTransformerConfig.Parse(ReadConfigJson(handle)), format, activations, device ?? FluxDevice.Cpu);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Opens the checkpoint at <paramref name="path"/>, loads the transformer and closes the checkpoint again.</summary>
    /// <inheritdoc cref="Load(Checkpoint, FluxWeightFormat, int, FluxActivationPrecision, FluxDevice?, IReadOnlyList{FluxLora}?)"/>
    public static FluxTransformer Load(
        string path,
        FluxWeightFormat format = FluxWeightFormat.AsStored,
        int threads = 0,
        FluxActivationPrecision activations = FluxActivationPrecision.F32,
        FluxDevice? device = null,
        IReadOnlyList<FluxLora>? loras = null)
    {
        using Checkpoint checkpoint = Checkpoint.Open(path);
        return Load(checkpoint, format, threads, activations, device, loras);
    }

    /// <summary>The configuration as the library reports it (JSON), including fields <see cref="Config"/> may not have yet.</summary>
    public string ConfigJson()
    {
        ThrowIfDisposed();
        return ReadConfigJson(handle);
    }

    /// <summary>Runs one forward pass and returns the output, [B, Limg, out_channels].</summary>
    /// <exception cref="ArgumentException">A tensor's length does not match the batch, token counts and <see cref="Config"/>.</exception>
    public float[] Forward(FluxForwardInputs inputs) => Forward(inputs, CancellationToken.None);

    /// <summary>Runs one forward pass and returns the output, [B, Limg, out_channels]; stops between blocks when <paramref name="cancellationToken"/> fires.</summary>
    /// <exception cref="ArgumentException">A tensor's length does not match the batch, token counts and <see cref="Config"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired.</exception>
    public float[] Forward(FluxForwardInputs inputs, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ThrowIfDisposed();
        inputs.Validate(Config);
        // Every value is written by the forward pass.
        float[] output = GC.AllocateUninitializedArray<float>(checked((int)inputs.OutputLength(Config)));
        Forward(inputs, output, cancellationToken);
        return output;
    }

    /// <summary>Runs one forward pass into <paramref name="output"/>, which must hold exactly [B, Limg, out_channels] values.</summary>
    /// <exception cref="ArgumentException">A tensor's or the output's length does not match the batch, token counts and <see cref="Config"/>.</exception>
    public void Forward(FluxForwardInputs inputs, Span<float> output) => Forward(inputs, output, CancellationToken.None);

    /// <summary>
    /// Runs one forward pass into <paramref name="output"/>, which must hold exactly [B, Limg, out_channels] values.
    /// The library checks <paramref name="cancellationToken"/> between transformer blocks.
    /// </summary>
    /// <exception cref="ArgumentException">A tensor's or the output's length does not match the batch, token counts and <see cref="Config"/>.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> fired; <paramref name="output"/> is then undefined.</exception>
    public unsafe void Forward(FluxForwardInputs inputs, Span<float> output, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ArgumentNullException.ThrowIfNull(inputs);
        ThrowIfDisposed();
        // The library trusts the pointers it is given: a short buffer would be read past its end,
        // so every length is checked here, where the message can name the tensor.
        inputs.Validate(Config);
        long outputLength = inputs.OutputLength(Config);
        if (output.Length != outputLength)
        {
            throw new ArgumentException(
                $"output has {output.Length} values but [B={inputs.Batch}, Limg={inputs.ImageTokens}, out_channels={Config.OutChannels}] needs {outputLength}.",
                nameof(output));
        }

        // A model without a guidance embedder never reads it; passing null keeps it that way.
        ReadOnlyMemory<float> guidance = Config.GuidanceEmbed ? inputs.Guidance : default;
        using MemoryHandle img = inputs.Img.Pin();
        using MemoryHandle imgIds = inputs.ImgIds.Pin();
        using MemoryHandle txt = inputs.Txt.Pin();
        using MemoryHandle txtIds = inputs.TxtIds.Pin();
        using MemoryHandle y = inputs.Y.Pin();
        using MemoryHandle timesteps = inputs.Timesteps.Pin();
        using MemoryHandle guidanceScales = guidance.Pin();

        FxFluxInputs native;
        NativeMethods.fx_flux_inputs_init(&native);
        native.Batch = inputs.Batch;
        native.ImgTokens = inputs.ImageTokens;
        native.TxtTokens = inputs.TextTokens;
        native.Img = (float*)img.Pointer;
        native.ImgIds = (float*)imgIds.Pointer;
        native.Txt = (float*)txt.Pointer;
        native.TxtIds = (float*)txtIds.Pointer;
        native.Y = (float*)y.Pointer;
        native.Timesteps = (float*)timesteps.Pointer;
        native.Guidance = guidance.IsEmpty ? null : (float*)guidanceScales.Pointer;
        using var cancellation = new NativeCancellation(cancellationToken);
        native.Cancel = cancellation.Pointer;
        using MemoryHandle blocks = inputs.BlocksComputed.Pin();
        native.BlocksComputed = inputs.BlocksComputed.IsEmpty ? null : (int*)blocks.Pointer;
        IReadOnlyList<FluxStepCache?>? caches = inputs.StepCaches;
        IntPtr[]? cachePointers = caches is null ? null : new IntPtr[caches.Count];
        int held = 0;
        try
        {
            // Each cache's handle is held for the call, so a Dispose on another thread frees it only afterwards.
            for (; cachePointers is not null && held < cachePointers.Length; held++)
            {
                if (caches![held] is { } cache)
                {
                    bool added = false;
                    cache.Handle.DangerousAddRef(ref added);
                    cachePointers[held] = cache.Handle.DangerousGetHandle();
                }
            }

            fixed (IntPtr* stepCaches = cachePointers)
            fixed (float* result = output)
            {
                native.StepCaches = stepCaches;
                NativeCancellation.ThrowIfFailed(NativeMethods.fx_flux_forward(handle, &native, result, (nuint)output.Length), cancellationToken);
            }
        }
        finally
        {
            for (int k = 0; k < held; k++)
            {
                caches![k]?.Handle.DangerousRelease();
            }
        }
    }

    /// <summary>Frees the model (its weights, and its share of the checkpoint's mapping). Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => handle.Dispose();

    private static unsafe string ReadConfigJson(FluxModelHandle model) =>
        NativeString.Read(model, static (m, buffer, capacity, needed) => NativeMethods.fx_flux_model_config_json(m, buffer, capacity, needed));

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(handle.IsClosed, this);
}
