using FluxNative.Interop;

namespace FluxNative.Cli;

/// <summary>Writes <see cref="FluxNativeDiagnostics"/> for people (<c>flux info</c>).</summary>
internal static class LibraryReport
{
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
}
