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
        };
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
