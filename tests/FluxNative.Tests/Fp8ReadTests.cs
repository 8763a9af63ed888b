using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>fp8 tensors (as FP8 engines store them) read as float32 through the native conversion.</summary>
public sealed class Fp8ReadTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData(DType.F8E4M3)]
    [InlineData(DType.F8E5M2)]
    public void Every_fp8_code_reads_as_its_hand_decoded_value(DType dtype)
    {
        byte[] everyCode = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray();
        string path = temp.File($"{dtype}.safetensors");
        new SafetensorsWriter().Add("codes", dtype, everyCode, 16, 16).Write(path);

        using Checkpoint checkpoint = Checkpoint.Open(path);
        float[] values = checkpoint.ReadFloat32("codes");

        Assert.Equal(HandConversions.Decode(everyCode, dtype), values);
        Assert.Equal(everyCode, checkpoint.ReadRaw("codes"));
    }
}
