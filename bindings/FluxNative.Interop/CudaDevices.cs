using System.Text;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>One GPU as the CUDA runtime sees it (<c>fx_cuda_device_info</c>), with the memory FluxNative holds on it.</summary>
/// <param name="Index">The device index (<c>cuda:N</c>).</param>
/// <param name="Name">The device's name, e.g. <c>NVIDIA H200</c>.</param>
/// <param name="ComputeMajor">Compute capability, major (9 for sm_90).</param>
/// <param name="ComputeMinor">Compute capability, minor.</param>
/// <param name="Multiprocessors">Streaming multiprocessors.</param>
/// <param name="TotalMemoryBytes">The device's memory.</param>
/// <param name="FreeMemoryBytes">Free now, device-wide (every process), as the driver reports it.</param>
/// <param name="ArenaBytesHeld">What this process's CUDA backends hold on the device now.</param>
/// <param name="ArenaBytesPeak">The most they held at once since the library was loaded.</param>
public sealed record CudaDeviceInfo(
    int Index, string Name, int ComputeMajor, int ComputeMinor, int Multiprocessors,
    ulong TotalMemoryBytes, ulong FreeMemoryBytes, ulong ArenaBytesHeld, ulong ArenaBytesPeak)
{
    /// <summary><c>sm_90</c>-style name of the compute capability.</summary>
    public string Architecture => $"sm_{ComputeMajor}{ComputeMinor}";
}

/// <summary>The GPUs the native library can use (none in a build without CUDA, or without a driver or GPU).</summary>
public static class CudaDevices
{
    /// <summary>Every visible device, in index order; empty when there is none.</summary>
    public static IReadOnlyList<CudaDeviceInfo> List()
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        if (!diagnostics.IsLoaded || !diagnostics.Backends.HasFlag(FluxBackends.Cuda))
        {
            return [];
        }

        var devices = new List<CudaDeviceInfo>();
        for (int i = 0; i < diagnostics.CudaDeviceCount; i++)
        {
            devices.Add(Get(i));
        }

        return devices;
    }

    /// <summary>Device <paramref name="index"/>.</summary>
    /// <exception cref="FluxNativeException">
    /// <see cref="FluxStatus.NotFound"/> without a driver or GPU, or for an index that is not a device;
    /// <see cref="FluxStatus.Unsupported"/> in a build without CUDA.
    /// </exception>
    public static unsafe CudaDeviceInfo Get(int index)
    {
        FluxNativeLibrary.EnsureLoaded();
        FxCudaDeviceInfo info;
        NativeMethods.fx_cuda_device_info_init(&info);
        NativeStatus.ThrowIfFailed(NativeMethods.fx_cuda_device_info_get(index, &info));
        var name = new ReadOnlySpan<byte>(info.Name, 256);
        int end = name.IndexOf((byte)0);
        return new CudaDeviceInfo(
            index, Encoding.UTF8.GetString(end < 0 ? name : name[..end]), info.ComputeMajor, info.ComputeMinor, info.Multiprocessors,
            info.TotalMemoryBytes, info.FreeMemoryBytes, info.ArenaBytesHeld, info.ArenaBytesPeak);
    }
}
