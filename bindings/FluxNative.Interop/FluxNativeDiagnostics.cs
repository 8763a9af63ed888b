namespace FluxNative;

/// <summary>Backends compiled into the native library (<c>FX_BACKEND_*</c>).</summary>
[Flags]
public enum FluxBackends : uint
{
    /// <summary>No backend (the library could not be queried).</summary>
    None = 0,

    /// <summary>The CPU backend, always built.</summary>
    Cpu = 1,

    /// <summary>The CUDA backend.</summary>
    Cuda = 2,
}

/// <summary>CPU features the native library detected on this machine (<c>FX_CPU_*</c>).</summary>
[Flags]
public enum CpuFeatures : uint
{
    /// <summary>None of the features below.</summary>
    None = 0,

    /// <summary>AVX2.</summary>
    Avx2 = 1,

    /// <summary>FMA3.</summary>
    Fma = 2,

    /// <summary>F16C (half-precision conversions).</summary>
    F16c = 4,

    /// <summary>AVX-512 Foundation.</summary>
    Avx512F = 8,

    /// <summary>AVX-512 Byte and Word.</summary>
    Avx512BW = 16,

    /// <summary>AVX-512 Vector Length.</summary>
    Avx512VL = 32,

    /// <summary>AVX-512 BF16.</summary>
    Avx512Bf16 = 64,

    /// <summary>AVX-512 FP16.</summary>
    Avx512Fp16 = 128,
}

/// <summary>
/// What <see cref="FluxNativeLibrary.Diagnose"/> found: every candidate tried, the file loaded and
/// what that library reports about itself. When loading failed, only <see cref="Probes"/> and
/// <see cref="LoadError"/> are set.
/// </summary>
public sealed record FluxNativeDiagnostics
{
    /// <summary>Every candidate tried, in probe order, with the loader's error for each that failed.</summary>
    public required IReadOnlyList<NativeLibraryProbe> Probes { get; init; }

    /// <summary>Why no library could be loaded, or null when one was.</summary>
    public string? LoadError { get; init; }

    /// <summary>Whether a library is loaded (and the fields below are filled in).</summary>
    public bool IsLoaded => LoadError is null;

    /// <summary>The candidate that was loaded (a path, or a file name found by the OS search).</summary>
    public string? LoadedFrom { get; init; }

    /// <summary>The file the loader opened, as the library reports it (<c>fx_library_path</c>).</summary>
    public string? LibraryPath { get; init; }

    /// <summary>The library's version, "MAJOR.MINOR.PATCH" (<c>fx_version</c>).</summary>
    public string? Version { get; init; }

    /// <summary>The library's ABI version (<c>fx_abi_version</c>).</summary>
    public uint? AbiVersion { get; init; }

    /// <summary>The ABI version this binding needs.</summary>
    public uint ExpectedAbiVersion { get; init; } = FluxNativeLibrary.AbiVersion;

    /// <summary>Backends compiled into the library.</summary>
    public FluxBackends Backends { get; init; }

    /// <summary>CPU features the kernels use: the machine's, less any above the <c>FX_CPU_ISA</c> cap.</summary>
    public CpuFeatures CpuFeatures { get; init; }

    /// <summary>CPU features the machine has, whatever <c>FX_CPU_ISA</c> says.</summary>
    public CpuFeatures MachineCpuFeatures { get; init; }

    /// <summary>The CUDA toolkit the library was built with (e.g. 11080 for 11.8); 0 without CUDA.</summary>
    public int CudaToolkitVersion { get; init; }

    /// <summary>The CUDA version the installed driver supports (e.g. 13000); 0 without a driver.</summary>
    public int CudaDriverVersion { get; init; }

    /// <summary>Usable CUDA devices now.</summary>
    public int CudaDeviceCount { get; init; }

    /// <summary>Formats a CUDA version number the way NVIDIA writes it: 11080 is "11.8".</summary>
    public static string FormatCudaVersion(int version) =>
        version <= 0 ? "none" : $"{version / 1000}.{version % 1000 / 10}";
}
