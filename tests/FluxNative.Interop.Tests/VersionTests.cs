namespace FluxNative.Interop.Tests;

/// <summary>The native library must be the binding's version (its package's): anything else is refused at load.</summary>
public class VersionTests
{
    [Fact]
    public void The_loaded_library_reports_the_bindings_version()
    {
        FluxNativeDiagnostics report = FluxNativeLibrary.Diagnose();

        Assert.True(report.IsLoaded, report.LoadError);
        Assert.Equal(FluxNativeLibrary.Version, report.Version);
    }

    [Fact]
    public void A_library_of_another_version_is_refused_naming_both_versions()
    {
        string? error = NativeLibraryLoader.VersionMismatch("/x/libfluxnative.so", "0.2.0", "0.1.0");

        Assert.Equal("libfluxnative at /x/libfluxnative.so is version 0.2.0, this FluxNative.Interop is 0.1.0: "
            + "use the library that came with this package (or build both from one checkout)", error);
        Assert.Contains("(none reported)", NativeLibraryLoader.VersionMismatch("/x/libfluxnative.so", null, "0.1.0"), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("0.1.0", "0.1.0")]
    [InlineData("0.1.0", "0.1.0-preview.1")]      // a pre-release package of the same library
    [InlineData("0.1.0", "0.1.0+7c09ac9")]        // build metadata
    public void The_versions_compare_without_pre_release_or_build_suffixes(string library, string binding)
    {
        Assert.Null(NativeLibraryLoader.VersionMismatch("lib", library, binding));
    }
}
