using BenchmarkDotNet.Attributes;
using FluxNative.Interop;

namespace FluxNative.Benchmarks;

/// <summary>
/// The fixed cost of crossing into the native library: the floor under every per-step call the
/// denoising loop will make.
/// </summary>
[MemoryDiagnoser]
public class InteropBenchmarks
{
    [GlobalSetup]
    public void Setup() => FluxNativeLibrary.EnsureLoaded();

    /// <summary>A call with no arguments and no status: pure transition cost.</summary>
    [Benchmark(Baseline = true)]
    public uint AbiVersion() => NativeMethods.fx_abi_version();

    /// <summary>A call with an argument and a result, still no work behind it.</summary>
    [Benchmark]
    public nuint DTypeSize() => NativeMethods.fx_dtype_size(2);

    /// <summary>A status-returning call through the error check, as every fallible call pays.</summary>
    [Benchmark]
    public unsafe void GetBuildInfoChecked()
    {
        FxBuildInfo info;
        NativeMethods.fx_build_info_init(&info);
        NativeStatus.ThrowIfFailed(NativeMethods.fx_get_build_info(&info));
    }
}
