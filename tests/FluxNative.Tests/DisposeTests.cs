using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>A disposed checkpoint refuses every use; disposing twice is harmless; data read before stays valid.</summary>
public sealed class DisposeTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void Every_member_throws_ObjectDisposedException_after_Dispose()
    {
        Checkpoint checkpoint = Open();
        string name = checkpoint.Tensors[0].Name;

        checkpoint.Dispose();

        Assert.Throws<ObjectDisposedException>(() => checkpoint.Tensors);
        Assert.Throws<ObjectDisposedException>(() => checkpoint.Find(name));
        Assert.Throws<ObjectDisposedException>(() => checkpoint.ReadFloat32(name));
        Assert.Throws<ObjectDisposedException>(() => checkpoint.ReadRaw(name));
        Assert.Throws<ObjectDisposedException>(() => checkpoint.Read(name, DType.F32, new byte[1 << 20]));
        Assert.Throws<ObjectDisposedException>(() => checkpoint.DescribeJson());
        Assert.Throws<ObjectDisposedException>(() => checkpoint.Describe());
    }

    [Fact]
    public void Dispose_twice_is_harmless()
    {
        Checkpoint checkpoint = Open();

        checkpoint.Dispose();
        checkpoint.Dispose();
    }

    [Fact]
    public void Tensor_infos_and_data_read_before_Dispose_stay_valid()
    {
        Checkpoint checkpoint = Open();
        IReadOnlyList<TensorInfo> tensors = checkpoint.Tensors;
        float[] values = checkpoint.ReadFloat32(tensors[0].Name);
        string firstName = tensors[0].Name;

        checkpoint.Dispose();
        GC.Collect();
        GC.WaitForPendingFinalizers();

        // Copied into managed strings and arrays at open / read time: nothing points into the closed checkpoint.
        Assert.Equal(firstName, tensors[0].Name);
        Assert.EndsWith(".safetensors", tensors[0].File);
        Assert.NotEmpty(values);
    }

    [Fact]
    public void An_undisposed_checkpoint_is_closed_by_its_finalizer_without_harm()
    {
        OpenAndForget();

        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();

        using Checkpoint again = Open();
        Assert.NotEmpty(again.Tensors);
    }

    private void OpenAndForget() => _ = Open().Tensors;

    private Checkpoint Open()
    {
        string path = temp.File($"model-{Guid.NewGuid():N}.safetensors");
        TinyModel.Write(new TinyModelOptions(), path);
        return Checkpoint.Open(path);
    }
}
