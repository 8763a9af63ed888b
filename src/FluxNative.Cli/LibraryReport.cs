using System.CommandLine;
using System.CommandLine.Invocation;
using System.Reflection;
using System.Text.Json.Nodes;
using FluxNative.Interop;

namespace FluxNative.Cli;

/// <summary>Writes <see cref="FluxNativeDiagnostics"/> for people or machines (<c>flux info [--json]</c>).</summary>
internal static class LibraryReport
{
    /// <summary>One line per GPU: <c>cuda:0  NVIDIA H200, sm_90, 132 SMs, 139.8 GiB (139.1 GiB free)</c>.</summary>
    public static IEnumerable<string> GpuLines(FluxNativeDiagnostics diagnostics)
    {
        ArgumentNullException.ThrowIfNull(diagnostics);
        for (int i = 0; i < (diagnostics.IsLoaded ? diagnostics.CudaDeviceCount : 0); i++)
        {
            string line;
            try
            {
                CudaDeviceInfo d = CudaDevices.Get(i);
                line = FormattableString.Invariant(
                    $"cuda:{i}  {d.Name}, {d.Architecture}, {d.Multiprocessors} SMs, {Gib(d.TotalMemoryBytes)} GiB ({Gib(d.FreeMemoryBytes)} GiB free)");
            }
            catch (FluxNativeException e)
            {
                line = $"cuda:{i}  not readable: {e.Message}";
            }

            yield return line;
        }
    }

    private static JsonArray GpusJson(FluxNativeDiagnostics diagnostics)
    {
        var gpus = new JsonArray();
        for (int i = 0; i < diagnostics.CudaDeviceCount; i++)
        {
            try
            {
                CudaDeviceInfo d = CudaDevices.Get(i);
                gpus.Add(new JsonObject
                {
                    ["index"] = i,
                    ["name"] = d.Name,
                    ["compute_capability"] = $"{d.ComputeMajor}.{d.ComputeMinor}",
                    ["multiprocessors"] = d.Multiprocessors,
                    ["total_memory_bytes"] = d.TotalMemoryBytes,
                    ["free_memory_bytes"] = d.FreeMemoryBytes,
                });
            }
            catch (FluxNativeException e)
            {
                gpus.Add(new JsonObject { ["index"] = i, ["error"] = e.Message });
            }
        }

        return gpus;
    }

    private static string Gib(ulong bytes) => (bytes / (double)(1UL << 30)).ToString("F1", System.Globalization.CultureInfo.InvariantCulture);

    private static string Describe(CpuFeatures features) =>
        features == CpuFeatures.None ? "no AVX2/AVX-512 features" : features.ToString();

    public static void Write(FluxNativeDiagnostics diagnostics, TextWriter output)
    {
        if (diagnostics.IsLoaded)
        {
            output.WriteLine($"library      {diagnostics.LibraryPath ?? diagnostics.LoadedFrom}");
            output.WriteLine($"version      {diagnostics.Version}");
            output.WriteLine($"ABI          {diagnostics.AbiVersion} (this binding needs {diagnostics.ExpectedAbiVersion})");
            output.WriteLine($"backends     {diagnostics.Backends}");
            output.WriteLine($"CPU          {Describe(diagnostics.CpuFeatures)}");
            if (diagnostics.MachineCpuFeatures != diagnostics.CpuFeatures)
            {
                output.WriteLine($"             capped by FX_CPU_ISA; the machine has {Describe(diagnostics.MachineCpuFeatures)}");
            }
            output.WriteLine($"CUDA         toolkit {FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaToolkitVersion)}, "
                + $"driver {FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaDriverVersion)}, {diagnostics.CudaDeviceCount} device(s)");
            foreach (string gpu in GpuLines(diagnostics))
            {
                output.WriteLine($"  {gpu}");
            }
        }
        else
        {
            // The probe list below says why, candidate by candidate.
            output.WriteLine("library      not loaded");
        }

        output.WriteLine("probed");
        foreach (NativeLibraryProbe probe in diagnostics.Probes)
        {
            string outcome = probe.Loaded ? "loaded" : probe.Error ?? "not loaded";
            output.WriteLine($"  {probe.Candidate} ({probe.Location}): {outcome}");
        }
    }

    /// <summary>The same as one JSON object (<c>flux info --json</c>).</summary>
    public static void WriteJson(FluxNativeDiagnostics diagnostics, TextWriter output)
    {
        var probes = new JsonArray();
        foreach (NativeLibraryProbe probe in diagnostics.Probes)
        {
            probes.Add(new JsonObject
            {
                ["candidate"] = probe.Candidate,
                ["location"] = probe.Location.ToString(),
                ["loaded"] = probe.Loaded,
                ["error"] = probe.Error,
            });
        }

        var document = new JsonObject
        {
            ["loaded"] = diagnostics.IsLoaded,
            ["load_error"] = diagnostics.LoadError,
            ["library"] = diagnostics.LibraryPath ?? diagnostics.LoadedFrom,
            ["version"] = diagnostics.Version,
            ["cli_version"] = VersionReport.CliVersion,
            ["abi_version"] = diagnostics.AbiVersion,
            ["expected_abi_version"] = diagnostics.ExpectedAbiVersion,
            ["backends"] = diagnostics.IsLoaded ? diagnostics.Backends.ToString() : null,
            ["cpu_features"] = diagnostics.IsLoaded ? diagnostics.CpuFeatures.ToString() : null,
            ["machine_cpu_features"] = diagnostics.IsLoaded ? diagnostics.MachineCpuFeatures.ToString() : null,
            ["cuda"] = diagnostics.IsLoaded
                ? new JsonObject
                {
                    ["toolkit"] = FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaToolkitVersion),
                    ["driver"] = FluxNativeDiagnostics.FormatCudaVersion(diagnostics.CudaDriverVersion),
                    ["devices"] = diagnostics.CudaDeviceCount,
                    ["gpus"] = GpusJson(diagnostics),
                }
                : null,
            ["probes"] = probes,
        };
        output.WriteLine(document.ToJsonString());
    }
}

/// <summary>
/// <c>flux --version</c>: the version of this <c>flux</c> and of the native library it loads. Both come from one
/// place (CMake's <c>project(VERSION)</c>, which Directory.Build.props reads for the assemblies), so they agree;
/// a library from elsewhere that does not is said so on standard error.
/// </summary>
internal static class VersionReport
{
    /// <summary>This <c>flux</c>'s informational version: <c>MAJOR.MINOR.PATCH</c>, then <c>+commit</c> when built from git.</summary>
    public static string CliVersion { get; } =
        typeof(VersionReport).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(VersionReport).Assembly.GetName().Version?.ToString(3) ?? "unknown";

    /// <summary>The <c>MAJOR.MINOR.PATCH</c> part of <see cref="CliVersion"/>.</summary>
    public static string CliRelease => CliVersion.Split('+', '-')[0];

    /// <summary>Writes the version line; the library's version is the one printed first, as it is what runs.</summary>
    public static int Write(CliConsole console)
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();
        if (!diagnostics.IsLoaded)
        {
            console.Out.WriteLine($"{CliRelease} (flux {CliVersion}; native library not loaded, see 'flux info')");
            return ExitCodes.Success;
        }

        console.Out.WriteLine($"{diagnostics.Version} (flux {CliVersion}; libfluxnative {diagnostics.Version}, ABI {diagnostics.AbiVersion})");
        if (diagnostics.Version != CliRelease)
        {
            console.Warn($"the native library ({diagnostics.LibraryPath ?? diagnostics.LoadedFrom}) is version {diagnostics.Version}, this flux {CliRelease}.");
        }

        return ExitCodes.Success;
    }

    /// <summary>The action of the root command's <c>--version</c> option.</summary>
    internal sealed class Action(CliConsole console) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult) => Write(console);
    }
}
