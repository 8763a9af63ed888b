using FluxNative.Testing;

namespace FluxNative.Interop.Tests;

/// <summary>Finding, vetting and reporting the native library.</summary>
public class LoaderTests
{
    [Fact]
    public void A_library_with_another_ABI_version_is_refused_with_both_versions_in_the_message()
    {
        string fixture = RepoPaths.AbiMismatchLibrary;
        Assert.True(File.Exists(fixture), $"The ABI-mismatch fixture is not built: {fixture} (CMake target fluxnative_abi_mismatch).");

        NativeLibraryProbe probe = NativeLibraryLoader.TryLoad(fixture, ProbeLocation.Configured, out IntPtr handle);

        Assert.Equal(IntPtr.Zero, handle);
        Assert.False(probe.Loaded);
        Assert.Equal(FluxNativeLibrary.AbiVersion + 1000, probe.AbiVersion);
        Assert.Equal(
            $"libfluxnative at {fixture} has ABI version {FluxNativeLibrary.AbiVersion + 1000}, this FluxNative.Interop needs {FluxNativeLibrary.AbiVersion}",
            probe.Error);
    }

    [Fact]
    public void Loading_only_a_mismatched_library_throws_a_FluxNativeException()
    {
        string fixture = RepoPaths.AbiMismatchLibrary;
        Assert.True(File.Exists(fixture), $"The ABI-mismatch fixture is not built: {fixture} (CMake target fluxnative_abi_mismatch).");

        var exception = Assert.Throws<FluxNativeLoadException>(() => NativeLibraryLoader.LoadFirst([(fixture, ProbeLocation.Configured)]));

        Assert.IsAssignableFrom<FluxNativeException>(exception);
        Assert.Equal(FluxStatus.Unsupported, exception.Code);
        Assert.Contains($"libfluxnative at {fixture} has ABI version {FluxNativeLibrary.AbiVersion + 1000}, this FluxNative.Interop needs {FluxNativeLibrary.AbiVersion}", exception.Message);
        Assert.Single(exception.Probes);
    }

    [Fact]
    public void A_missing_file_is_reported_without_calling_the_loader()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"no-such-{Guid.NewGuid():N}", "libfluxnative.so");

        NativeLibraryProbe probe = NativeLibraryLoader.TryLoad(missing, ProbeLocation.AssemblyDirectory, out IntPtr handle);

        Assert.Equal(IntPtr.Zero, handle);
        Assert.False(probe.Loaded);
        Assert.Equal("no such file", probe.Error);
    }

    [Fact]
    public void A_file_that_is_not_a_library_reports_the_loader_error()
    {
        using var temp = new TempDirectory();
        string notALibrary = temp.File("libfluxnative.so");
        File.WriteAllText(notALibrary, "this is not an ELF file");

        NativeLibraryProbe probe = NativeLibraryLoader.TryLoad(notALibrary, ProbeLocation.Configured, out IntPtr handle);

        Assert.Equal(IntPtr.Zero, handle);
        Assert.False(probe.Loaded);
        Assert.Contains(notALibrary, probe.Error);
        Assert.Null(probe.AbiVersion);
    }

    [Fact]
    public void A_library_that_is_not_libfluxnative_is_refused()
    {
        // The C math library: present on every Linux, and without fx_abi_version.
        NativeLibraryProbe probe = NativeLibraryLoader.TryLoad("libm.so.6", ProbeLocation.OperatingSystemSearch, out IntPtr handle);

        Assert.Equal(IntPtr.Zero, handle);
        Assert.False(probe.Loaded);
        Assert.Contains("exports no fx_abi_version", probe.Error);
    }

    [Fact]
    public void A_configured_path_is_the_only_candidate()
    {
        var candidates = NativeLibraryLoader.Candidates("/opt/flux/libfluxnative.so", "/env/libfluxnative.so", "/app/lib", "/app");

        Assert.Equal([("/opt/flux/libfluxnative.so", ProbeLocation.Configured)], candidates);
    }

    [Fact]
    public void The_environment_variable_is_the_only_candidate_when_nothing_is_configured()
    {
        var candidates = NativeLibraryLoader.Candidates(null, "/env/libfluxnative.so", "/app/lib", "/app");

        Assert.Equal([("/env/libfluxnative.so", ProbeLocation.EnvironmentVariable)], candidates);
    }

    [Fact]
    public void Without_an_explicit_path_the_probe_order_is_documented_one()
    {
        string file = NativeLibraryLoader.FileName;
        string rid = NativeLibraryLoader.RuntimesFolder;

        var candidates = NativeLibraryLoader.Candidates(null, null, "/app/lib", "/app");

        Assert.Equal(
            [
                (Path.Combine("/app/lib", file), ProbeLocation.AssemblyDirectory),
                (Path.Combine("/app", file), ProbeLocation.BaseDirectory),
                (Path.Combine("/app/lib", rid, file), ProbeLocation.AssemblyRuntimesFolder),
                (Path.Combine("/app", rid, file), ProbeLocation.BaseRuntimesFolder),
                (file, ProbeLocation.OperatingSystemSearch),
            ],
            candidates);
        Assert.Equal(Path.Combine("runtimes", "linux-x64", "native"), rid);
    }

    [Fact]
    public void Candidates_that_coincide_are_tried_once()
    {
        var candidates = NativeLibraryLoader.Candidates(null, null, "/app", "/app");

        Assert.Equal(3, candidates.Count);
        Assert.Equal(ProbeLocation.AssemblyDirectory, candidates[0].Location);
    }

    [Fact]
    public void Diagnose_reports_the_loaded_library()
    {
        FluxNativeDiagnostics diagnostics = FluxNativeLibrary.Diagnose();

        Assert.True(diagnostics.IsLoaded, diagnostics.LoadError);
        Assert.True(FluxNativeLibrary.IsLoaded);
        string expected = Path.Combine(Path.GetDirectoryName(typeof(FluxNativeLibrary).Assembly.Location)!, NativeLibraryLoader.FileName);
        Assert.Equal(expected, diagnostics.LoadedFrom);
        Assert.Equal(Path.GetFullPath(expected), Path.GetFullPath(diagnostics.LibraryPath!));
        Assert.Equal(FluxNativeLibrary.AbiVersion, diagnostics.AbiVersion);
        Assert.Matches(@"^\d+\.\d+\.\d+", diagnostics.Version);
        Assert.True(diagnostics.Backends.HasFlag(FluxBackends.Cpu));
        Assert.True(diagnostics.CudaDeviceCount >= 0);
        NativeLibraryProbe loaded = Assert.Single(diagnostics.Probes, p => p.Loaded);
        Assert.Equal(expected, loaded.Candidate);
    }

    [Fact]
    public void Configure_after_the_library_is_loaded_throws()
    {
        FluxNativeLibrary.EnsureLoaded();

        var exception = Assert.Throws<InvalidOperationException>(() => FluxNativeLibrary.Configure("/elsewhere/libfluxnative.so"));

        Assert.Contains("already loaded", exception.Message);
    }

    [Theory]
    [InlineData(11080, "11.8")]
    [InlineData(12040, "12.4")]
    [InlineData(13000, "13.0")]
    [InlineData(0, "none")]
    public void CUDA_versions_are_formatted_as_NVIDIA_writes_them(int version, string expected)
    {
        Assert.Equal(expected, FluxNativeDiagnostics.FormatCudaVersion(version));
    }
}
