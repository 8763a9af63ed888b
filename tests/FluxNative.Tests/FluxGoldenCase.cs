using System.Text.Json;

namespace FluxNative.Testing;

/// <summary>
/// A golden case of <c>native/tests/data/flux</c> (see its README): inputs, the float64 reference's
/// output, and the recorded parameters of the tiny model it was computed for, which is regenerated
/// rather than committed. Shared by FluxNative.Tests and FluxNative.Cli.Tests.
/// </summary>
internal sealed class FluxGoldenCase
{
    private readonly IReadOnlyDictionary<string, string> metadata;

    private FluxGoldenCase(string name, IReadOnlyDictionary<string, string> metadata)
    {
        Name = name;
        this.metadata = metadata;
    }

    public string Name { get; }

    public string Folder => FolderOf(Name);

    public string InputsPath => Path.Combine(Folder, "inputs.safetensors");

    public string ExpectedPath => Path.Combine(Folder, "expected.safetensors");

    public static FluxGoldenCase Load(string name)
    {
        using Checkpoint expected = Checkpoint.Open(Path.Combine(FolderOf(name), "expected.safetensors"));
        return new FluxGoldenCase(name, expected.Describe().Metadata);
    }

    /// <summary>
    /// Writes the case's tiny model under <paramref name="directory"/> from the recorded <c>model_params</c>
    /// and returns its path (a file for BFL, a folder for diffusers). Checks the weights fingerprint first,
    /// so that a changed tiny-model writer is reported as such and not as a numerical failure.
    /// </summary>
    public string WriteModel(string directory)
    {
        TinyModelOptions options = TinyModelOptionsFromParams(metadata["model_params"]);
        string path = Path.Combine(directory, options.Layout == CheckpointLayout.Bfl ? $"{Name}.safetensors" : Name);
        TinyModel.Write(options, path);
        CheckFingerprint(path);
        return path;
    }

    /// <summary>
    /// The <see cref="TinyModelOptions"/> of a golden file's recorded <c>model_params</c> (the JSON every
    /// tools/reference/make_*_goldens.py writes: kind, variant, layout, dtype, seed, shards and the four sizes).
    /// </summary>
    public static TinyModelOptions TinyModelOptionsFromParams(string json)
    {
        using JsonDocument parameters = JsonDocument.Parse(json);
        JsonElement p = parameters.RootElement;
        return new TinyModelOptions
        {
            Kind = p.GetProperty("kind").GetString() switch
            {
                "flux" => ModelKind.FluxTransformer,
                "ae" => ModelKind.Autoencoder,
                "t5" => ModelKind.T5Encoder,
                "clip" => ModelKind.ClipText,
                var other => throw new InvalidOperationException($"unknown model_params kind '{other}'"),
            },
            Layout = p.GetProperty("layout").GetString() == "bfl" ? CheckpointLayout.Bfl : CheckpointLayout.Diffusers,
            DType = p.GetProperty("dtype").GetString() switch
            {
                "f32" => DType.F32,
                "bf16" => DType.BF16,
                "f16" => DType.F16,
                var other => throw new InvalidOperationException($"unknown model_params dtype '{other}'"),
            },
            Variant = p.GetProperty("variant").GetString() == "dev" ? FluxVariant.Dev : FluxVariant.Schnell,
            Shards = p.GetProperty("shards").GetInt32(),
            Seed = p.GetProperty("seed").GetUInt64(),
            HiddenSize = p.GetProperty("hidden_size").GetInt32(),
            NumHeads = p.GetProperty("num_heads").GetInt32(),
            Depth = p.GetProperty("depth").GetInt32(),
            DepthSingle = p.GetProperty("depth_single").GetInt32(),
        };
    }

    public FluxForwardInputs ReadInputs()
    {
        using Checkpoint inputs = Checkpoint.Open(InputsPath);
        TensorInfo img = inputs.Find("img")!;
        return new FluxForwardInputs
        {
            Batch = (int)img.Shape[0],
            ImageTokens = (int)img.Shape[1],
            TextTokens = (int)inputs.Find("txt")!.Shape[1],
            Img = inputs.ReadFloat32("img"),
            ImgIds = inputs.ReadFloat32("img_ids"),
            Txt = inputs.ReadFloat32("txt"),
            TxtIds = inputs.ReadFloat32("txt_ids"),
            Y = inputs.ReadFloat32("y"),
            Timesteps = inputs.ReadFloat32("timesteps"),
            Guidance = inputs.Find("guidance") is null ? ReadOnlyMemory<float>.Empty : inputs.ReadFloat32("guidance"),
        };
    }

    /// <summary>The reference output with unquantised timesteps and guidance (the engine's policy).</summary>
    public float[] ReadExpectedOutput()
    {
        using Checkpoint expected = Checkpoint.Open(ExpectedPath);
        return expected.ReadFloat32("out");
    }

    /// <summary>||got - want|| / ||want||, in float64; infinity if anything is not finite.</summary>
    public static double RelativeL2(ReadOnlySpan<float> got, ReadOnlySpan<float> want)
    {
        if (got.Length != want.Length)
        {
            throw new ArgumentException($"{got.Length} values compared with {want.Length}.");
        }

        double difference = 0, reference = 0;
        for (int i = 0; i < want.Length; i++)
        {
            if (!float.IsFinite(got[i]))
            {
                return double.PositiveInfinity;
            }

            double d = (double)got[i] - want[i];
            difference += d * d;
            reference += (double)want[i] * want[i];
        }

        return Math.Sqrt(difference / reference);
    }

    private static string FolderOf(string name) => Path.Combine(RepoPaths.Root, "native", "tests", "data", "flux", name);

    private void CheckFingerprint(string modelPath)
    {
        using JsonDocument fingerprint = JsonDocument.Parse(metadata["weights_fingerprint"]);
        double wantSum = double.Parse(fingerprint.RootElement.GetProperty("sum").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        double wantSumSq = double.Parse(fingerprint.RootElement.GetProperty("sum_sq").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
        int wantCount = fingerprint.RootElement.GetProperty("tensor_count").GetInt32();

        using Checkpoint model = Checkpoint.Open(modelPath);
        double sum = 0, sumSq = 0;
        foreach (TensorInfo tensor in model.Tensors)
        {
            foreach (float value in model.ReadFloat32(tensor.Name))
            {
                sum += value;
                sumSq += (double)value * value;
            }
        }

        const string Regenerate = "the tiny-model writer changed: regenerate the goldens (native/tests/data/flux/README.md)";
        Assert.True(model.Tensors.Count == wantCount, $"{Name}: {model.Tensors.Count} tensors, the goldens were made with {wantCount}; {Regenerate}");
        Assert.True(Math.Abs(sum - wantSum) <= (1e-9 * Math.Abs(wantSum)) + 1e-9, $"{Name}: weight sum {sum:R}, goldens {wantSum:R}; {Regenerate}");
        Assert.True(Math.Abs(sumSq - wantSumSq) <= 1e-9 * wantSumSq, $"{Name}: weight sum of squares {sumSq:R}, goldens {wantSumSq:R}; {Regenerate}");
    }
}
