using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>
/// <see cref="TextEncoder"/> from .NET against native/tests/data/text: the float64 NumPy CLIP and T5 references
/// (provenance in that folder's README), on tiny models regenerated from the recorded parameters.
/// </summary>
public sealed class TextEncoderTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData("clip-f32", 2e-5)]
    [InlineData("clip-bf16", 2e-5)]
    [InlineData("t5-f32", 2e-5)]
    [InlineData("t5-f32-sharded", 2e-5)]
    [InlineData("t5-long", 3e-5)]
    public void Hidden_states_and_pooled_vector_match_the_reference(string name, double bound)
    {
        string folder = Path.Combine(RepoPaths.Root, "native", "tests", "data", "text", name);
        using Checkpoint inputs = Checkpoint.Open(Path.Combine(folder, "inputs.safetensors"));
        using Checkpoint expected = Checkpoint.Open(Path.Combine(folder, "expected.safetensors"));
        using TextEncoder encoder = TextEncoder.Load(WriteModel(expected.Describe().Metadata["model_params"]));

        TensorInfo idsInfo = inputs.Find("ids")!;
        byte[] raw = inputs.ReadRaw("ids");
        var ids = new int[raw.Length / 4];
        Buffer.BlockCopy(raw, 0, ids, 0, raw.Length);
        bool clip = encoder.Config.Kind == ModelKind.ClipText;
        TextEncoding result = encoder.Encode(ids, (int)idsInfo.Shape[0], hidden: true, pooled: clip);

        double hidden = FluxGoldenCase.RelativeL2(result.Hidden, expected.ReadFloat32("hidden"));
        Assert.True(hidden <= bound, $"{name}: hidden rel. L2 {hidden:E2} (bound {bound:E0})");
        if (clip)
        {
            double pooled = FluxGoldenCase.RelativeL2(result.Pooled, expected.ReadFloat32("pooled"));
            Assert.True(pooled <= bound, $"{name}: pooled rel. L2 {pooled:E2}");
        }
        else
        {
            Assert.Null(result.Pooled);
        }
    }

    [Fact]
    public void Bad_ids_and_requests_are_refused_with_the_reason()
    {
        string path = temp.File("clip");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.ClipText, Layout = CheckpointLayout.Diffusers, Seed = 1 }, path);
        using TextEncoder clip = TextEncoder.Load(path);
        Assert.Equal((ModelKind.ClipText, 77), (clip.Config.Kind, clip.Config.MaxPositions));
        Assert.Contains("outside the vocabulary", Assert.Throws<ArgumentException>(() => clip.Encode([1, 2, clip.Config.VocabSize], 1)).Message);
        Assert.Contains("at most 77", Assert.Throws<ArgumentException>(() => clip.Encode(new int[78], 1)).Message);
        Assert.Throws<ArgumentException>(() => clip.Encode(new int[5], 2));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.Throws<OperationCanceledException>(() => clip.Encode(new int[4], 1, cancellationToken: cancelled.Token));
    }

    private string WriteModel(string parametersJson)
    {
        string path = temp.File($"model-{Guid.NewGuid():N}");
        TinyModel.Write(FluxGoldenCase.TinyModelOptionsFromParams(parametersJson), path);
        return path;
    }
}
