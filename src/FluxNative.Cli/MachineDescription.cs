using System.Runtime.InteropServices;

namespace FluxNative.Cli;

/// <summary>What a benchmark ran on and with: the machine, the CPU features the library uses, CUDA, and the software versions.</summary>
internal sealed record MachineDescription
{
    public required string Cpu { get; init; }

    public required int LogicalCores { get; init; }

    public long? MemoryBytes { get; init; }

    /// <summary>The CPU features the native kernels use (after any <c>FX_CPU_ISA</c> cap), e.g. <c>Avx2, Fma, F16c</c>.</summary>
    public required string CpuFeatures { get; init; }

    public required string Os { get; init; }

    public required string Runtime { get; init; }

    /// <summary>This <c>flux</c>'s informational version: release, then <c>+commit</c> when built from git.</summary>
    public required string FluxVersion { get; init; }

    public string? Commit => FluxVersion.Split('+') is [_, var commit, ..] ? commit : null;

    public string? LibraryVersion { get; init; }

    public required string Device { get; init; }

    /// <summary>CUDA as the library sees it (toolkit, driver, devices), or null when the library has no CUDA backend.</summary>
    public string? Cuda { get; init; }

    /// <summary>The GPU the benchmark ran on (name, architecture, SMs, memory), or null on the CPU.</summary>
    public string? Gpu { get; init; }

    public static MachineDescription Current(FluxDevice device)
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        bool cuda = diagnostics.Backends.HasFlag(FluxBackends.Cuda);
        return new MachineDescription
        {
            Cpu = CpuModel() ?? RuntimeInformation.ProcessArchitecture.ToString(),
            LogicalCores = Environment.ProcessorCount,
            MemoryBytes = MemoryTotal(),
            CpuFeatures = diagnostics.CpuFeatures == FluxNative.CpuFeatures.None ? "none of AVX2/AVX-512" : diagnostics.CpuFeatures.ToString(),
            Os = RuntimeInformation.OSDescription,
            Runtime = RuntimeInformation.FrameworkDescription,
            FluxVersion = VersionReport.CliVersion,
            LibraryVersion = diagnostics.Version,
            Device = device.ToString(),
            Cuda = cuda
                ? $"toolkit {FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaToolkitVersion)}, driver {FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaDriverVersion)}, {diagnostics.CudaDeviceCount} device(s)"
                : null,
            Gpu = device.Kind == FluxDeviceKind.Cuda ? Describe(device.Index) : null,
        };
    }

    /// <summary>
    /// The most this process's CUDA backends held on the benchmark's device at once (their memory arenas), or null on
    /// the CPU.
    /// </summary>
    public static long? PeakDeviceBytes(FluxDevice device)
    {
        if (device.Kind != FluxDeviceKind.Cuda)
        {
            return null;
        }

        try
        {
            return (long)CudaDevices.Get(device.Index).ArenaBytesPeak;
        }
        catch (FluxNativeException)
        {
            return null;
        }
    }

    private static string Describe(int index)
    {
        try
        {
            CudaDeviceInfo d = CudaDevices.Get(index);
            return FormattableString.Invariant($"{d.Name} ({d.Architecture}, {d.Multiprocessors} SMs, {d.TotalMemoryBytes / (double)(1UL << 30):F1} GiB)");
        }
        catch (FluxNativeException e)
        {
            return $"cuda:{index} not readable: {e.Message}";
        }
    }

    /// <summary>The first <c>model name</c> of /proc/cpuinfo (Linux), or null.</summary>
    private static string? CpuModel() => ProcField("/proc/cpuinfo", "model name");

    private static long? MemoryTotal() =>
        ProcField("/proc/meminfo", "MemTotal") is { } text && text.Split(' ', StringSplitOptions.RemoveEmptyEntries) is [var kb, "kB"] && long.TryParse(kb, out long value)
            ? value * 1024
            : null;

    private static string? ProcField(string path, string name)
    {
        try
        {
            foreach (string line in File.ReadLines(path))
            {
                int colon = line.IndexOf(':', StringComparison.Ordinal);
                if (colon > 0 && line[..colon].Trim() == name)
                {
                    return line[(colon + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }

        return null;
    }
}
