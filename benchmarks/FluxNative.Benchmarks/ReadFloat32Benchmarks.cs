using BenchmarkDotNet.Attributes;

namespace FluxNative.Benchmarks;

/// <summary>
/// Reading a 16M-element bf16 tensor as float32: memory-mapped data converted natively, into a
/// fresh array (what <see cref="Checkpoint.ReadFloat32(string)"/> does) and into a reused buffer.
/// </summary>
[MemoryDiagnoser]
public class ReadFloat32Benchmarks
{
    private const int Elements = 16 * 1024 * 1024;
    private const string TensorName = "weight";

    private string folder = string.Empty;
    private Checkpoint checkpoint = null!;
    private float[] buffer = [];

    [GlobalSetup]
    public void Setup()
    {
        folder = Directory.CreateTempSubdirectory("fluxnative-bench-").FullName;
        string path = Path.Combine(folder, "bf16.safetensors");

        // Deterministic bf16 values spread over many exponents, so the conversion does real work.
        var bf16 = new byte[Elements * 2];
        var random = new Random(1234);
        for (int i = 0; i < Elements; i++)
        {
            float value = (float)((random.NextDouble() - 0.5) * Math.Pow(2, random.Next(-20, 20)));
            ushort bits = (ushort)(BitConverter.SingleToInt32Bits(value) >>> 16);
            bf16[2 * i] = (byte)bits;
            bf16[(2 * i) + 1] = (byte)(bits >> 8);
        }

        new SafetensorsWriter().Add(TensorName, DType.BF16, bf16, 4096, 4096).Write(path);
        checkpoint = Checkpoint.Open(path);
        buffer = new float[Elements];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        checkpoint.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    [Benchmark(Baseline = true)]
    public float[] NewArray() => checkpoint.ReadFloat32(TensorName);

    [Benchmark]
    public void IntoBuffer() => checkpoint.ReadFloat32(TensorName, buffer);
}
