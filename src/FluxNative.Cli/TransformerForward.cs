using System.Diagnostics;
using System.Globalization;

namespace FluxNative.Cli;

/// <summary>What <c>flux forward</c> was asked to do.</summary>
/// <param name="ModelPath">The transformer checkpoint: a BFL file or a diffusers folder.</param>
/// <param name="InputsPath">A safetensors file with img, img_ids, txt, txt_ids, y, timesteps and (dev) guidance.</param>
/// <param name="OutputPath">Where to write <c>out</c> [B, Limg, out_channels] as F32.</param>
/// <param name="WeightFormat">How to hold the linear weights.</param>
/// <param name="Threads">Forward threads; 0 for the process-wide pool.</param>
/// <param name="Repeat">Timed forward passes after the first; null to time nothing.</param>
/// <param name="Activations">Precision of the activations entering the linear layers.</param>
/// <param name="Device">Where the model lives and runs.</param>
/// <param name="Loras">LoRA files merged into the weights at load.</param>
internal sealed record ForwardRequest(
    string ModelPath,
    string InputsPath,
    string OutputPath,
    FluxWeightFormat WeightFormat = FluxWeightFormat.AsStored,
    int Threads = 0,
    int? Repeat = null,
    FluxActivationPrecision Activations = FluxActivationPrecision.F32,
    FluxDevice? Device = null,
    IReadOnlyList<FluxLora>? Loras = null);

/// <summary>Milliseconds per forward pass over the timed runs.</summary>
internal sealed record ForwardTiming(int Runs, double MedianMilliseconds, double MinMilliseconds, double MaxMilliseconds);

/// <summary>What one <c>flux forward</c> did, for the tests to look at beside the printed text.</summary>
internal sealed record ForwardReport(FluxTransformerConfig Config, FluxForwardInputs Inputs, float[] Output, ForwardTiming? Timing);

/// <summary>
/// <c>flux forward</c>: reads a transformer and an inputs file, checks every input's shape against the
/// model and the other inputs, runs a forward pass, writes <c>out</c>, and optionally times repeated passes.
/// </summary>
internal static class TransformerForward
{
    public static readonly string[] WeightFormatNames = ["stored", "f32", "bf16", "fp8"];

    public static FluxWeightFormat ParseWeightFormat(string name) => name switch
    {
        "stored" => FluxWeightFormat.AsStored,
        "f32" => FluxWeightFormat.F32,
        "bf16" => FluxWeightFormat.Bf16,
        "fp8" => FluxWeightFormat.Fp8,
        _ => throw new CliInputException($"Unknown weight format '{name}'; expected one of {string.Join(", ", WeightFormatNames)}."),
    };

    /// <summary>The <c>--activations</c> names, indexed by <see cref="FluxActivationPrecision"/>.</summary>
    public static readonly string[] ActivationPrecisionNames = ["f32", "bf16"];

    public static FluxActivationPrecision ParseActivationPrecision(string name) => name switch
    {
        "f32" => FluxActivationPrecision.F32,
        "bf16" => FluxActivationPrecision.Bf16,
        _ => throw new CliInputException($"Unknown activation precision '{name}'; expected one of {string.Join(", ", ActivationPrecisionNames)}."),
    };

    public static ForwardReport Run(ForwardRequest request, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(output);
        if (request.Repeat is < 1)
        {
            throw new CliInputException($"--repeat must be at least 1, not {request.Repeat}.");
        }

        using FluxTransformer model = FluxTransformer.Load(request.ModelPath, request.WeightFormat, request.Threads, request.Activations, request.Device, request.Loras);
        FluxTransformerConfig config = model.Config;
        FluxForwardInputs inputs = ReadInputs(request.InputsPath, config);

        float[] result = model.Forward(inputs);
        new SafetensorsWriter
        {
            Metadata =
            {
                ["producer"] = "flux forward",
                ["model"] = request.ModelPath,
                ["weights"] = WeightFormatNames[(int)request.WeightFormat],
                ["activations"] = ActivationPrecisionNames[(int)request.Activations],
            },
        }
            .Add("out", result, inputs.Batch, inputs.ImageTokens, config.OutChannels)
            .Write(request.OutputPath);

        output.WriteLine($"model    {request.ModelPath}");
        output.WriteLine($"config   {config.Summary}");
        output.WriteLine($"run      B={inputs.Batch}, Limg={inputs.ImageTokens}, Ltxt={inputs.TextTokens}; weights {WeightFormatNames[(int)request.WeightFormat]}; "
            + $"activations {ActivationPrecisionNames[(int)request.Activations]}; "
            + (request.Threads == 0 ? "threads: process pool" : $"threads: {request.Threads}"));
        output.WriteLine($"out      [{inputs.Batch}, {inputs.ImageTokens}, {config.OutChannels}] F32 -> {request.OutputPath}");

        ForwardTiming? timing = null;
        if (request.Repeat is int repeat)
        {
            // The forward above already was the warm-up (first touch of the mapped weights, thread
            // start-up, caches); what follows measures steady-state passes with the weights loaded.
            timing = Time(model, inputs, repeat);
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"forward  median {timing.MedianMilliseconds:F3} ms, min {timing.MinMilliseconds:F3} ms, max {timing.MaxMilliseconds:F3} ms per forward ({timing.Runs} timed runs after 1 warm-up, weights already loaded)"));
        }

        return new ForwardReport(config, inputs, result, timing);
    }

    /// <summary>Times <paramref name="runs"/> forward passes, one by one, into one reused output buffer.</summary>
    public static ForwardTiming Time(FluxTransformer model, FluxForwardInputs inputs, int runs)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(runs, 1);
        // Allocated once, so the timings measure the forward pass and not the allocator.
        float[] output = new float[checked((int)inputs.OutputLength(model.Config))];
        double[] milliseconds = new double[runs];
        for (int i = 0; i < runs; i++)
        {
            long start = Stopwatch.GetTimestamp();
            model.Forward(inputs, output);
            milliseconds[i] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        }

        Array.Sort(milliseconds);
        double median = runs % 2 == 1
            ? milliseconds[runs / 2]
            : (milliseconds[(runs / 2) - 1] + milliseconds[runs / 2]) / 2;
        return new ForwardTiming(runs, median, milliseconds[0], milliseconds[^1]);
    }

    /// <summary>
    /// Reads the forward inputs from a safetensors file (any floating-point dtype, converted to F32),
    /// taking B and Limg from <c>img</c> and Ltxt from <c>txt</c> and checking every other tensor against
    /// them and <paramref name="config"/>. A missing or misshapen tensor is one line naming the file, the
    /// tensor, its shape and the shape expected.
    /// </summary>
    public static FluxForwardInputs ReadInputs(string path, FluxTransformerConfig config)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(config);
        using Checkpoint file = Checkpoint.Open(path);
        var reader = new InputReader(path, file);

        TensorInfo img = reader.Expect("img", [Dim.Free("B"), Dim.Free("Limg"), Dim.Of("in_channels", config.InChannels)]);
        int batch = (int)img.Shape[0];
        int imageTokens = (int)img.Shape[1];
        Dim b = Dim.Of("B", batch);
        TensorInfo txt = reader.Expect("txt", [b, Dim.Free("Ltxt"), Dim.Of("context_in_dim", config.ContextInDim)]);
        int textTokens = (int)txt.Shape[1];
        Dim limg = Dim.Of("Limg", imageTokens);
        Dim ltxt = Dim.Of("Ltxt", textTokens);
        reader.Expect("img_ids", [b, limg, Dim.Of(null, 3)]);
        reader.Expect("txt_ids", [b, ltxt, Dim.Of(null, 3)]);
        reader.Expect("y", [b, Dim.Of("vec_in_dim", config.VecInDim)]);
        reader.Expect("timesteps", [b]);

        // Schnell has no guidance embedder, so a guidance tensor is optional and ignored, shape and all;
        // dev cannot run without one.
        if (config.GuidanceEmbed)
        {
            reader.Expect("guidance", [b], why: " (this dev model has a guidance embedder)");
        }

        return new FluxForwardInputs
        {
            Batch = batch,
            ImageTokens = imageTokens,
            TextTokens = textTokens,
            Img = file.ReadFloat32("img"),
            ImgIds = file.ReadFloat32("img_ids"),
            Txt = file.ReadFloat32("txt"),
            TxtIds = file.ReadFloat32("txt_ids"),
            Y = file.ReadFloat32("y"),
            Timesteps = file.ReadFloat32("timesteps"),
            Guidance = config.GuidanceEmbed ? file.ReadFloat32("guidance") : ReadOnlyMemory<float>.Empty,
        };
    }

    /// <summary>One dimension of an expected shape: a named size (B=2, in_channels=64), or a size the tensor decides (B).</summary>
    private readonly record struct Dim(string? Name, long? Size)
    {
        public static Dim Free(string name) => new(name, null);

        public static Dim Of(string? name, long size) => new(name, size);

        public override string ToString() => (Name, Size) switch
        {
            (null, long size) => size.ToString(CultureInfo.InvariantCulture),
            (string name, long size) => string.Create(CultureInfo.InvariantCulture, $"{name}={size}"),
            (string name, null) => name,
            _ => "?",
        };
    }

    private sealed class InputReader(string path, Checkpoint file)
    {
        public TensorInfo Expect(string name, Dim[] shape, string why = "")
        {
            string expected = $"[{string.Join(", ", shape)}]";
            TensorInfo tensor = file.Find(name)
                ?? throw new CliInputException($"{path}: no tensor '{name}'; expected {name} {expected}{why}.");
            bool fits = tensor.Shape.Count == shape.Length;
            for (int d = 0; fits && d < shape.Length; d++)
            {
                long actual = tensor.Shape[d];
                // A size the tensor decides (B, Limg, Ltxt) must still be a usable count.
                fits = shape[d].Size is long size ? actual == size : actual is >= 1 and <= int.MaxValue;
            }

            if (!fits)
            {
                throw new CliInputException($"{path}: {name} has shape {tensor.ShapeText} but {expected} is expected{why}.");
            }

            if (!tensor.DType.IsFloatingPoint())
            {
                throw new CliInputException(
                    $"{path}: {name} is {tensor.DType.SafetensorsName()}; expected a floating-point dtype (F32, F16, BF16, ...), which is read as F32.");
            }

            return tensor;
        }
    }
}
