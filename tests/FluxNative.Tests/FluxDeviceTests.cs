using FluxNative.Interop;
using FluxNative.Testing;

namespace FluxNative.Tests;

/// <summary>
/// <see cref="FluxDevice"/>: the names it accepts, and that a device the library cannot use fails the load
/// with the reason (never a silent CPU run), for each kind of model.
/// </summary>
public sealed class FluxDeviceTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Theory]
    [InlineData("cpu", FluxDeviceKind.Cpu, 0, "cpu")]
    [InlineData("cuda", FluxDeviceKind.Cuda, 0, "cuda:0")]
    [InlineData("cuda:0", FluxDeviceKind.Cuda, 0, "cuda:0")]
    [InlineData("cuda:7", FluxDeviceKind.Cuda, 7, "cuda:7")]
    public void Parse_accepts_the_documented_names(string text, FluxDeviceKind kind, int index, string canonical)
    {
        FluxDevice device = FluxDevice.Parse(text);
        Assert.Equal(kind, device.Kind);
        Assert.Equal(index, device.Index);
        Assert.Equal(canonical, device.ToString());
        Assert.Equal(device, FluxDevice.Parse(device.ToString()));
    }

    [Fact]
    public void Cuda_devices_are_the_ones_the_library_counts_and_no_other_index_is_one()
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        IReadOnlyList<CudaDeviceInfo> devices = CudaDevices.List();
        bool cuda = diagnostics.Backends.HasFlag(FluxBackends.Cuda);
        Assert.Equal(cuda ? diagnostics.CudaDeviceCount : 0, devices.Count);
        foreach (CudaDeviceInfo d in devices)
        {
            Assert.False(string.IsNullOrWhiteSpace(d.Name));
            Assert.StartsWith("sm_", d.Architecture);
            Assert.True(d.TotalMemoryBytes > 0 && d.FreeMemoryBytes <= d.TotalMemoryBytes);
            Assert.True(d.ArenaBytesHeld <= d.ArenaBytesPeak);
        }

        var e = Assert.Throws<FluxNativeException>(() => CudaDevices.Get(devices.Count));
        Assert.Equal(cuda ? FluxStatus.NotFound : FluxStatus.Unsupported, e.Code);
        Assert.Contains($"cuda:{devices.Count}", e.Message);
    }

    [Theory]
    [InlineData("")]
    [InlineData("gpu")]
    [InlineData("CPU")]
    [InlineData("cuda:")]
    [InlineData("cuda:-1")]
    [InlineData("cuda:1x")]
    [InlineData("cuda:123456")]
    public void Parse_refuses_anything_else_naming_it(string text)
    {
        FormatException e = Assert.Throws<FormatException>(() => FluxDevice.Parse(text));
        Assert.Contains($"\"{text}\"", e.Message);
        Assert.False(FluxDevice.TryParse(text, out _));
    }

    [Fact]
    public void A_model_loads_on_the_cpu_and_says_so()
    {
        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        using FluxTransformer model = FluxTransformer.Load(golden.WriteModel(temp.Path), device: FluxDevice.Cpu);
        Assert.Equal(FluxDevice.Cpu, model.Device);
        Assert.Equal(FluxDevice.Cpu, FluxTransformer.Load(golden.WriteModel(temp.Path)).Device);
    }

    // This machine has no usable CUDA GPU (or a build without CUDA): each load names the device and the reason.
    [Fact]
    public void A_cuda_device_that_cannot_run_fails_every_load_with_the_reason()
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        if (diagnostics.CudaDeviceCount > 0)
        {
            return;  // a GPU is here: the CUDA backend's own tests cover it
        }

        FluxGoldenCase golden = FluxGoldenCase.Load("dev-f32-bfl");
        string transformer = golden.WriteModel(temp.Path);
        string ae = Path.Combine(temp.Path, "ae.safetensors");
        TinyModel.Write(new TinyModelOptions { Kind = ModelKind.Autoencoder }, ae);
        foreach (Action load in new Action[]
                 {
                     () => FluxTransformer.Load(transformer, device: FluxDevice.Cuda(0)).Dispose(),
                     () => Autoencoder.Load(ae, device: FluxDevice.Cuda(0)).Dispose(),
                 })
        {
            FluxNativeException e = Assert.Throws<FluxNativeException>(load);
            Assert.Contains("cuda:0", e.Message);
            Assert.True(e.Code is FluxStatus.Unsupported or FluxStatus.NotFound, $"{e.Code}: {e.Message}");
        }
    }
}
