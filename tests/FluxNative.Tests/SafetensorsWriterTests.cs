using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>Managed arrays written with the native safetensors writer read back exactly.</summary>
public sealed class SafetensorsWriterTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Tensors_of_every_kind_round_trip()
    {
        string path = temp.File("mixed.safetensors");
        float[] weights = [1.5f, -2.25f, 3, 0, float.Epsilon, -0.0f];
        Half[] halves = [(Half)1, (Half)(-0.5f), Half.MaxValue, Half.Epsilon];
        long[] ids = [1, -2, long.MaxValue];
        byte[] bf16 = [0x80, 0x3F, 0x00, 0xC0]; // 1.0 and -2.0

        var writer = new SafetensorsWriter()
            .Add("weights", weights, 2, 3)
            .Add("halves", halves, 4)
            .Add("ids", ids, 3)
            .Add("bf16", DType.BF16, bf16, 2)
            .Add("scalar", new double[] { 42 });
        writer.Metadata["format"] = "pt";
        writer.Metadata["note"] = "quotes \" and unicode é";
        writer.Write(path);

        using Checkpoint checkpoint = Checkpoint.Open(path);
        Assert.Equal(5, checkpoint.Tensors.Count);
        TensorInfo info = checkpoint.Find("weights")!;
        Assert.Equal(DType.F32, info.DType);
        Assert.Equal([2L, 3L], info.Shape);
        Assert.Equal(24, info.ByteSize);
        Assert.Equal(path, info.File);
        Assert.Equal(0, info.FileOffset % 8);
        Assert.Equal(weights, checkpoint.ReadFloat32("weights"));
        Assert.Equal(halves.Select(h => (float)h), checkpoint.ReadFloat32("halves"));
        Assert.Equal(ids.SelectMany(BitConverter.GetBytes), checkpoint.ReadRaw("ids"));
        Assert.Equal([1f, -2f], checkpoint.ReadFloat32("bf16"));
        Assert.Empty(checkpoint.Find("scalar")!.Shape);
        Assert.Equal(1, checkpoint.Find("scalar")!.ElementCount);
        Assert.Equal([42f], checkpoint.ReadFloat32("scalar"));

        CheckpointDescription description = checkpoint.Describe();
        Assert.Equal("pt", description.Metadata["format"]);
        Assert.Equal("quotes \" and unicode é", description.Metadata["note"]);
        Assert.Equal(ModelKind.Unknown, description.Kind);
    }

    [Fact]
    public void Data_that_does_not_fit_the_shape_is_refused_when_added()
    {
        var writer = new SafetensorsWriter();

        var exception = Assert.Throws<ArgumentException>(() => writer.Add("w", new float[5], 2, 3));

        Assert.Contains("'w'", exception.Message);
        Assert.Equal(0, writer.Count);
    }

    [Fact]
    public void A_name_cannot_be_added_twice()
    {
        var writer = new SafetensorsWriter().Add("w", new float[1], 1);

        Assert.Throws<ArgumentException>(() => writer.Add("w", new float[1], 1));
    }

    [Fact]
    public void A_type_without_a_dtype_is_refused()
    {
        Assert.Throws<ArgumentException>(() => new SafetensorsWriter().Add("c", new char[2], 2));
    }

    [Fact]
    public void A_failed_write_is_an_IO_error_and_leaves_no_file()
    {
        string path = Path.Combine(temp.Path, "no-such-folder", "out.safetensors");

        var exception = Assert.Throws<FluxNativeException>(() => new SafetensorsWriter().Add("w", new float[1], 1).Write(path));

        Assert.Equal(FluxStatus.Io, exception.Code);
        Assert.False(File.Exists(path));
    }
}
