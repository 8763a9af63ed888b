using System.Buffers.Binary;
using System.Text;
using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>Truncated and corrupted files are refused at open with a Format error that names the file.</summary>
public sealed class BrokenFileTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void A_truncated_file_is_a_format_error_naming_the_file_and_the_tensor()
    {
        string path = WriteModel();
        string lastTensor;
        long dataStart;
        using (Checkpoint checkpoint = Checkpoint.Open(path))
        {
            TensorInfo last = checkpoint.Tensors.MaxBy(t => t.FileOffset)!;
            lastTensor = last.Name;
            dataStart = last.FileOffset;
        }

        // Cut into the data of the tensor stored last: the header is intact, the data is not.
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(dataStart + 1);
        }

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(path));

        Assert.Equal(FluxStatus.Format, exception.Code);
        Assert.Contains(path, exception.Message);
        Assert.Contains(lastTensor, exception.Message);
    }

    [Fact]
    public void A_file_cut_inside_its_header_is_a_format_error_naming_the_file()
    {
        string path = WriteModel();
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(20);
        }

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(path));

        Assert.Equal(FluxStatus.Format, exception.Code);
        Assert.Contains(path, exception.Message);
    }

    [Fact]
    public void A_corrupted_header_is_a_format_error_naming_the_file()
    {
        string path = WriteModel();
        byte[] bytes = File.ReadAllBytes(path);
        // The JSON header starts after its 8-byte length; replace its opening with something that is not JSON.
        Encoding.ASCII.GetBytes("#!garbage").CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(path));

        Assert.Equal(FluxStatus.Format, exception.Code);
        Assert.Contains(path, exception.Message);
    }

    [Fact]
    public void A_tensor_whose_extent_runs_past_the_data_is_a_format_error_naming_the_tensor()
    {
        string path = temp.File("bad-offsets.safetensors");
        new SafetensorsWriter().Add("victim", new float[] { 1, 2, 3, 4 }, 2, 2).Write(path);
        byte[] bytes = File.ReadAllBytes(path);
        long headerLength = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        string header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength);
        // Same length, so the data stays where it is: only the declared extent grows past the end.
        string corrupted = header.Replace("[0,16]", "[0,64]", StringComparison.Ordinal);
        Assert.NotEqual(header, corrupted);
        Encoding.UTF8.GetBytes(corrupted).CopyTo(bytes, 8);
        File.WriteAllBytes(path, bytes);

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(path));

        Assert.Equal(FluxStatus.Format, exception.Code);
        Assert.Contains(path, exception.Message);
        Assert.Contains("victim", exception.Message);
    }

    [Fact]
    public void A_missing_file_names_the_path()
    {
        string path = temp.File("missing.safetensors");

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(path));

        Assert.True(exception.Code is FluxStatus.Io or FluxStatus.NotFound, $"unexpected code {exception.Code}");
        Assert.Contains(path, exception.Message);
    }

    [Fact]
    public void A_missing_shard_names_the_shard()
    {
        string folder = temp.File("sharded");
        TinyModel.Write(new TinyModelOptions { Layout = CheckpointLayout.Diffusers, Shards = 2 }, folder);
        string shard = Directory.GetFiles(folder, "*-00002-of-00002.safetensors").Single();
        File.Delete(shard);

        var exception = Assert.Throws<FluxNativeException>(() => Checkpoint.Open(folder));

        Assert.Contains(Path.GetFileName(shard), exception.Message);
    }

    private string WriteModel()
    {
        string path = temp.File($"model-{Guid.NewGuid():N}.safetensors");
        TinyModel.Write(new TinyModelOptions { DType = DType.BF16 }, path);
        return path;
    }
}
